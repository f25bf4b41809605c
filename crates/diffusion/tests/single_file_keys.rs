//! The single-file key map (`semi_diffusion::single_file`) against names of the published SD 1.5,
//! SD 2.x and SDXL checkpoints, and over every weight of the tiny fixtures: each diffusers weight
//! has one original place, and no two share one (except q, k and v in OpenCLIP's fused
//! `in_proj`, which are its three row blocks).

mod common;

use semi_diffusion::config::{UNetConfig, VaeConfig};
use semi_diffusion::single_file::{self, Original, Part};
use std::collections::BTreeSet;

fn whole(name: &str) -> Original {
    Original {
        name: name.to_string(),
        part: Part::Whole,
    }
}

#[test]
fn sd15_names_are_the_published_ones() {
    let cfg = UNetConfig::parse(semi_bench::models::SD15_UNET).unwrap();
    let m = "model.diffusion_model.";
    for (d, o) in [
        ("conv_in.weight", "input_blocks.0.0.weight"),
        ("time_embedding.linear_2.bias", "time_embed.2.bias"),
        (
            "down_blocks.0.resnets.0.norm1.weight",
            "input_blocks.1.0.in_layers.0.weight",
        ),
        (
            "down_blocks.0.attentions.1.proj_in.weight",
            "input_blocks.2.1.proj_in.weight",
        ),
        (
            "down_blocks.0.downsamplers.0.conv.weight",
            "input_blocks.3.0.op.weight",
        ),
        (
            "down_blocks.1.resnets.0.conv_shortcut.weight",
            "input_blocks.4.0.skip_connection.weight",
        ),
        (
            "down_blocks.3.resnets.1.conv2.bias",
            "input_blocks.11.0.out_layers.3.bias",
        ),
        (
            "mid_block.resnets.1.time_emb_proj.weight",
            "middle_block.2.emb_layers.1.weight",
        ),
        (
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        ),
        (
            "up_blocks.0.resnets.2.conv1.weight",
            "output_blocks.2.0.in_layers.2.weight",
        ),
        (
            "up_blocks.0.upsamplers.0.conv.weight",
            "output_blocks.2.1.conv.weight",
        ),
        (
            "up_blocks.1.upsamplers.0.conv.bias",
            "output_blocks.5.2.conv.bias",
        ),
        (
            "up_blocks.2.upsamplers.0.conv.weight",
            "output_blocks.8.2.conv.weight",
        ),
        (
            "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight",
            "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
        ),
        ("conv_norm_out.weight", "out.0.weight"),
        ("conv_out.bias", "out.2.bias"),
    ] {
        assert_eq!(
            single_file::unet(d, &cfg).unwrap(),
            whole(&format!("{m}{o}")),
            "{d}"
        );
    }
    let v = "first_stage_model.";
    for (d, o, part) in [
        (
            "encoder.down_blocks.0.downsamplers.0.conv.weight",
            "encoder.down.0.downsample.conv.weight",
            Part::Whole,
        ),
        (
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            "encoder.down.1.block.0.nin_shortcut.weight",
            Part::Whole,
        ),
        (
            "decoder.up_blocks.0.resnets.0.conv1.weight",
            "decoder.up.3.block.0.conv1.weight",
            Part::Whole,
        ),
        (
            "decoder.up_blocks.2.upsamplers.0.conv.bias",
            "decoder.up.1.upsample.conv.bias",
            Part::Whole,
        ),
        (
            "encoder.mid_block.attentions.0.to_q.weight",
            "encoder.mid.attn_1.q.weight",
            Part::Squeeze1x1,
        ),
        (
            "decoder.mid_block.attentions.0.to_out.0.bias",
            "decoder.mid.attn_1.proj_out.bias",
            Part::Whole,
        ),
        (
            "decoder.mid_block.attentions.0.group_norm.weight",
            "decoder.mid.attn_1.norm.weight",
            Part::Whole,
        ),
        (
            "decoder.mid_block.resnets.1.norm2.weight",
            "decoder.mid.block_2.norm2.weight",
            Part::Whole,
        ),
        (
            "encoder.conv_norm_out.bias",
            "encoder.norm_out.bias",
            Part::Whole,
        ),
        (
            "post_quant_conv.weight",
            "post_quant_conv.weight",
            Part::Whole,
        ),
    ] {
        let want = Original {
            name: format!("{v}{o}"),
            part,
        };
        assert_eq!(single_file::vae(d, 4).unwrap(), want, "{d}");
    }
    assert_eq!(
        single_file::clip(
            "text_model.encoder.layers.11.mlp.fc2.weight",
            "cond_stage_model.transformer."
        ),
        whole("cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight")
    );
}

#[test]
fn open_clip_names_are_the_published_ones() {
    let p = "cond_stage_model.model.";
    let k =
        single_file::open_clip("text_model.encoder.layers.22.self_attn.k_proj.weight", p).unwrap();
    assert_eq!(
        k.name,
        format!("{p}transformer.resblocks.22.attn.in_proj_weight")
    );
    assert_eq!(k.part, Part::Rows { index: 1, of: 3 });
    let v = single_file::open_clip("text_model.encoder.layers.0.self_attn.v_proj.bias", p).unwrap();
    assert_eq!(v.part, Part::Rows { index: 2, of: 3 });
    assert_eq!(
        single_file::open_clip("text_model.encoder.layers.3.mlp.fc1.weight", p).unwrap(),
        whole(&format!("{p}transformer.resblocks.3.mlp.c_fc.weight"))
    );
    assert_eq!(
        single_file::open_clip("text_model.embeddings.position_embedding.weight", p).unwrap(),
        whole(&format!("{p}positional_embedding"))
    );
    let proj =
        single_file::open_clip("text_projection.weight", "conditioner.embedders.1.model.").unwrap();
    assert_eq!(proj.name, "conditioner.embedders.1.model.text_projection");
    assert_eq!(proj.part, Part::Transposed);
    assert!(
        single_file::open_clip("text_model.encoder.layers.0.self_attn.bogus.weight", p).is_err()
    );
}

#[test]
fn sdxl_names_are_the_published_ones() {
    let cfg = UNetConfig::parse(semi_bench::models::SDXL_UNET).unwrap();
    let m = "model.diffusion_model.";
    for (d, o) in [
        ("add_embedding.linear_1.weight", "label_emb.0.0.weight"),
        (
            "down_blocks.1.attentions.0.proj_in.weight",
            "input_blocks.4.1.proj_in.weight",
        ),
        (
            "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q.weight",
            "input_blocks.8.1.transformer_blocks.9.attn1.to_q.weight",
        ),
        (
            "up_blocks.0.attentions.2.proj_out.bias",
            "output_blocks.2.1.proj_out.bias",
        ),
        (
            "up_blocks.0.upsamplers.0.conv.weight",
            "output_blocks.2.2.conv.weight",
        ),
        (
            "up_blocks.1.upsamplers.0.conv.weight",
            "output_blocks.5.2.conv.weight",
        ),
        (
            "up_blocks.2.resnets.2.conv2.weight",
            "output_blocks.8.0.out_layers.3.weight",
        ),
    ] {
        assert_eq!(
            single_file::unet(d, &cfg).unwrap(),
            whole(&format!("{m}{o}")),
            "{d}"
        );
    }
}

/// Every weight of a fixture component maps, and no two to the same place.
fn injective(names: &[String], map: impl Fn(&str) -> Original) {
    let mut seen = BTreeSet::new();
    for n in names {
        let o = map(n);
        assert!(
            seen.insert((o.name.clone(), format!("{:?}", o.part))),
            "{n} -> {o:?} twice"
        );
    }
}

fn names(model: &str, component: &str, file: &str) -> Vec<String> {
    let path = common::fixture(model).join(component).join(file);
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    tensors
        .into_keys()
        .filter(|k| !k.ends_with("position_ids"))
        .collect()
}

#[test]
fn every_fixture_weight_has_one_place() {
    for model in ["tiny-sd1", "tiny-sd2", "tiny-sdxl", "tiny-sdxl-ssd"] {
        let dir = common::fixture(model);
        let unet_cfg = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
        let unet = names(model, "unet", "diffusion_pytorch_model.safetensors");
        injective(&unet, |n| single_file::unet(n, &unet_cfg).unwrap());
        let vae_cfg = VaeConfig::from_file(&dir.join("vae/config.json")).unwrap();
        let vae = names(model, "vae", "diffusion_pytorch_model.safetensors");
        injective(&vae, |n| {
            single_file::vae(n, vae_cfg.block_out_channels.len()).unwrap()
        });
        let text = names(model, "text_encoder", "model.safetensors");
        if model == "tiny-sd2" {
            injective(&text, |n| {
                single_file::open_clip(n, "cond_stage_model.model.").unwrap()
            });
        } else {
            injective(&text, |n| {
                single_file::clip(n, "cond_stage_model.transformer.")
            });
        }
        if dir.join("text_encoder_2").is_dir() {
            let text2 = names(model, "text_encoder_2", "model.safetensors");
            injective(&text2, |n| {
                single_file::open_clip(n, "conditioner.embedders.1.model.").unwrap()
            });
        }
    }
}

/// Where each diffusers weight of one component is.
type KeyMap<'a> = Box<dyn Fn(&str) -> Original + 'a>;

/// The weights of a diffusers folder, read through the map from that folder converted by
/// `tools/to_single_file.py` (which `--check`s its output against diffusers' `from_single_file`):
/// every tensor equal. Needs the converted files: `SEMI_SINGLE_FILES=DIR` holding
/// `<model>.safetensors` for the tiny fixtures (no Python in the test run itself).
#[test]
#[ignore = "needs SEMI_SINGLE_FILES (tools/to_single_file.py output)"]
fn converted_files_hold_every_weight() {
    use candle_core::{Device, Tensor};
    let dir = std::path::PathBuf::from(std::env::var("SEMI_SINGLE_FILES").unwrap());
    let read = |o: &Original, file: &std::collections::HashMap<String, Tensor>| -> Tensor {
        let t = &file[&o.name];
        match o.part {
            Part::Whole => t.clone(),
            Part::Rows { index, of } => {
                let n = t.dim(0).unwrap() / of;
                t.narrow(0, index * n, n).unwrap()
            }
            Part::Squeeze1x1 => t.squeeze(3).unwrap().squeeze(2).unwrap(),
            Part::Transposed => t.t().unwrap(),
        }
    };
    for model in ["tiny-sd1", "tiny-sd2", "tiny-sdxl-ssd"] {
        let file =
            candle_core::safetensors::load(dir.join(format!("{model}.safetensors")), &Device::Cpu)
                .unwrap();
        let folder = common::fixture(model);
        let unet_cfg = UNetConfig::from_file(&folder.join("unet/config.json")).unwrap();
        let vae_cfg = VaeConfig::from_file(&folder.join("vae/config.json")).unwrap();
        let sdxl = folder.join("text_encoder_2").is_dir();
        let mut components: Vec<(&str, &str, KeyMap)> = vec![
            (
                "unet",
                "diffusion_pytorch_model.safetensors",
                Box::new(|n: &str| single_file::unet(n, &unet_cfg).unwrap()),
            ),
            (
                "vae",
                "diffusion_pytorch_model.safetensors",
                Box::new(|n: &str| single_file::vae(n, vae_cfg.block_out_channels.len()).unwrap()),
            ),
            (
                "text_encoder",
                "model.safetensors",
                Box::new(move |n: &str| match (model, sdxl) {
                    ("tiny-sd2", _) => {
                        single_file::open_clip(n, "cond_stage_model.model.").unwrap()
                    }
                    (_, true) => single_file::clip(n, "conditioner.embedders.0.transformer."),
                    _ => single_file::clip(n, "cond_stage_model.transformer."),
                }),
            ),
        ];
        if sdxl {
            components.push((
                "text_encoder_2",
                "model.safetensors",
                Box::new(|n: &str| {
                    single_file::open_clip(n, "conditioner.embedders.1.model.").unwrap()
                }),
            ));
        }
        let mut checked = 0;
        for (component, name, map) in &components {
            let path = folder.join(component).join(name);
            for (key, want) in candle_core::safetensors::load(&path, &Device::Cpu).unwrap() {
                if key.ends_with("position_ids") {
                    continue;
                }
                let got = read(&map(&key), &file);
                assert_eq!(got.dims(), want.dims(), "{model} {component} {key}");
                let diff = (got - &want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap();
                assert_eq!(
                    diff.to_scalar::<f32>().unwrap(),
                    0.0,
                    "{model} {component} {key}"
                );
                checked += 1;
            }
        }
        eprintln!("{model}: {checked} weights found in the single file");
    }
}
