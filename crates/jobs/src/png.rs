//! The one PNG encoder of semi: 8-bit RGB with text chunks, into any writer (a file, a temporary
//! file of [`crate::write_atomic_file`], or memory for the server's previews). Writes are
//! buffered here, so pass the file itself.

use std::io::{BufWriter, Write};

use anyhow::{Context, Result};

/// Writes `rgb` (row-major interleaved RGB8, `width * height * 3` bytes) as a PNG to `out`, with
/// one text chunk per `(keyword, text)`: `tEXt` when the text is ASCII, UTF-8 `iTXt` otherwise.
pub fn write_png_rgb8(
    out: impl Write,
    width: u32,
    height: u32,
    rgb: &[u8],
    text: &[(&str, &str)],
) -> Result<()> {
    let mut out = BufWriter::new(out);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for &(keyword, value) in text {
        let added = if value.is_ascii() {
            enc.add_text_chunk(keyword.into(), value.into())
        } else {
            enc.add_itxt_chunk(keyword.into(), value.into())
        };
        added.with_context(|| format!("cannot add the PNG text chunk {keyword:?}"))?;
    }
    let mut writer = enc.write_header().context("cannot write a PNG header")?;
    writer
        .write_image_data(rgb)
        .context("cannot encode the PNG")?;
    writer.finish().context("cannot finish the PNG")?;
    out.flush().context("cannot write the PNG")
}

/// [`write_png_rgb8`] into memory.
pub fn encode_png_rgb8(
    width: u32,
    height: u32,
    rgb: &[u8],
    text: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_png_rgb8(&mut out, width, height, rgb, text)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_pixels_and_text() {
        let rgb = [255, 0, 0, 0, 255, 0];
        let bytes = encode_png_rgb8(2, 1, &rgb, &[("a", "plain"), ("b", "très")]).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(info.uncompressed_latin1_text[0].keyword, "a");
        assert_eq!(info.uncompressed_latin1_text[0].text, "plain");
        assert_eq!(info.utf8_text[0].get_text().unwrap(), "très");
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, rgb);
        assert!(encode_png_rgb8(2, 2, &rgb, &[]).is_err());
    }
}
