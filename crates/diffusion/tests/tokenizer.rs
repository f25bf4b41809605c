//! CLIP tokenizer parity with transformers 5.24 `CLIPTokenizer` (tools/make_text_fixtures.py).
use semi_diffusion::tokenizer::ClipTokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn cases(path: &Path) -> Vec<Value> {
    serde_json::from_str::<Value>(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A copy of the SD 1.x tokenizer folder with the pad token switched to `!` as in SD 2.x.
fn sd2_dir(tmp: &Path) -> PathBuf {
    let src = fixtures().join("clip-tokenizer");
    let dir = tmp.join("sd2");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(src.join(name), dir.join(name)).unwrap();
    }
    let map = std::fs::read_to_string(src.join("special_tokens_map.json")).unwrap();
    let mut map: Value = serde_json::from_str(&map).unwrap();
    map["pad_token"] = Value::String("!".into());
    std::fs::write(dir.join("special_tokens_map.json"), map.to_string()).unwrap();
    dir
}

#[test]
fn known_ids_of_openai_clip() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("clip-tokenizer")).unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(tok.max_length(), 77);
    let ids = tok.encode("a photo of a cat").unwrap();
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&i| i == 49407));
}

#[test]
fn awkward_prompts_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let sd1 = ClipTokenizer::from_dir(&fixtures().join("clip-tokenizer")).unwrap();
    let sd2 = ClipTokenizer::from_dir(&sd2_dir(tmp.path())).unwrap();
    assert_eq!((sd1.pad_id(), sd2.pad_id()), (49407, 0));
    let all = cases(&fixtures().join("tokenizer_cases.json"));
    assert!(all.len() >= 25);
    for case in &all {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            sd1.encode(text).unwrap(),
            ids(&case["ids_sd1"]),
            "sd1: {text:?}"
        );
        assert_eq!(
            sd2.encode(text).unwrap(),
            ids(&case["ids_sd2"]),
            "sd2: {text:?}"
        );
        assert_eq!(
            sd1.encode_plain(text).unwrap(),
            ids(&case["plain"]),
            "plain: {text:?}"
        );
    }
}

#[test]
fn tokenizer_json_folder_as_transformers_5_saves_it() {
    let dir = fixtures().join("clip-tokenizer-json");
    assert!(!dir.join("vocab.json").exists());
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!((tok.max_length(), tok.pad_id()), (32, 0));
    let all = cases(&dir.join("cases.json"));
    for case in &all {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
    }
    // Older tokenizers versions write merges as "a b" strings: same result.
    let tmp = tempfile::tempdir().unwrap();
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let merges: Vec<Value> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap(),
                p[1].as_str().unwrap()
            ))
        })
        .collect();
    json["model"]["merges"] = Value::Array(merges);
    std::fs::write(tmp.path().join("tokenizer.json"), json.to_string()).unwrap();
    std::fs::copy(
        dir.join("tokenizer_config.json"),
        tmp.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let tok2 = ClipTokenizer::from_dir(tmp.path()).unwrap();
    for case in &all {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok2.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
    }
}

#[test]
fn token_positions_find_the_phrase() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("clip-tokenizer")).unwrap();
    let prompt = tok.encode("a photo of a hot dog and a cat.").unwrap();
    assert_eq!(tok.token_positions(&prompt, "cat"), Some(vec![9]));
    assert_eq!(tok.token_positions(&prompt, "Hot  Dog"), Some(vec![5, 6]));
    assert_eq!(tok.token_positions(&prompt, "a"), Some(vec![1]));
    assert_eq!(tok.token_positions(&prompt, "giraffe"), None);
    assert_eq!(tok.token_positions(&prompt, ""), None);
    // A phrase pushed past the 77-token window is not found.
    let long = format!("{} zebra", "cat ".repeat(80));
    assert_eq!(
        tok.token_positions(&tok.encode(&long).unwrap(), "zebra"),
        None
    );
}

#[test]
fn bad_folders_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ClipTokenizer::from_dir(&tmp.path().join("nope"))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(format!("{err:#}").contains("vocab.json"), "{err:#}");
    std::fs::write(tmp.path().join("vocab.json"), "{\"a\": 0,").unwrap();
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(
        format!("{err:#}").contains("vocab.json: malformed JSON"),
        "{err:#}"
    );
    std::fs::write(
        tmp.path().join("vocab.json"),
        r#"{"a</w>": 0, "<|endoftext|>": 1, "<|startoftext|>": 2}"#,
    )
    .unwrap();
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(format!("{err:#}").contains("merges.txt"), "{err:#}");
    std::fs::write(tmp.path().join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    std::fs::write(tmp.path().join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(format!("{err:#}").contains("`ab`"), "{err:#}");
    std::fs::write(tmp.path().join("merges.txt"), "").unwrap();
    std::fs::write(
        tmp.path().join("special_tokens_map.json"),
        r#"{"pad_token": "!"}"#,
    )
    .unwrap();
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(format!("{err:#}").contains("pad_token `!`"), "{err:#}");
    std::fs::write(tmp.path().join("special_tokens_map.json"), "{}").unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"model_max_length": "x"}"#,
    )
    .unwrap();
    let err = ClipTokenizer::from_dir(tmp.path()).err().unwrap();
    assert!(format!("{err:#}").contains("model_max_length"), "{err:#}");
}
