//! Image decoding and the pHash-64 perceptual hash.
//!
//! pHash-64 is computed exactly as the Python reference does, so that users of the reference get
//! the same hashes:
//!
//! 1. decode the file (PNG, JPEG, WebP, GIF first frame), refusing anything larger than
//!    [`Limits::max_pixels`] *before* pixel memory is allocated (decompression bombs);
//! 2. convert to 8-bit luma with Pillow's integer weights
//!    `(R·19595 + G·38470 + B·7471 + 0x8000) >> 16` (ITU-R 601), alpha ignored;
//! 3. resize to 32×32 with Pillow's fixed-point, two-pass Lanczos3;
//! 4. orthonormal 2-D DCT-II, keep the top-left 8×8 block read row-major (index 0 = DC);
//! 5. threshold at the median of the 63 AC terms, bit = value > median (strict);
//! 6. pack MSB-first, DC at bit 63.
//!
//! The crate does no I/O: bytes in, hash out.
//!
//! ```
//! use obscura_phash::{phash64, PHash64};
//!
//! let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/photos/camera.png"))?;
//! let hash: PHash64 = phash64(&png)?;
//! assert_eq!(hash.to_string(), "0xbff1c1c0434e8cbc");
//!
//! // A JPEG re-encode of the same photo lands within a few bits.
//! let jpg = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/derived/camera.q75.jpg"))?;
//! assert!(hash.distance(phash64(&jpg)?) <= 8);
//!
//! // Bytes that are not an image are a typed error, not a panic.
//! assert!(phash64(b"not an image").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dct;
mod resample;

use std::fmt;
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Side of the square the image is reduced to before the DCT.
const REDUCED: usize = 32;
/// Side of the low-frequency block that becomes the hash.
const LOW: usize = 8;

/// Errors from decoding and hashing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not in a format we decode (PNG, JPEG, WebP, GIF).
    #[error("not a supported image (PNG, JPEG, WebP or GIF expected)")]
    UnknownFormat,
    /// The image is larger than the configured pixel limit.
    #[error("image is {width}×{height} pixels, more than the limit of {max_pixels} pixels")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// The image declares a zero width or height.
    #[error("image has no pixels ({width}×{height})")]
    Empty {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The file is truncated or corrupt.
    #[error("cannot decode {format} image: {reason}")]
    Decode {
        /// The format the header claimed.
        format: &'static str,
        /// What the decoder reported.
        reason: String,
    },
}

/// Decoding limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width × height` accepted. Checked from the header, before pixels are decoded.
    pub max_pixels: u64,
}

impl Default for Limits {
    /// 100 megapixels.
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
        }
    }
}

/// An 8-bit greyscale image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LumaImage {
    /// Width in pixels (≥ 1).
    pub width: u32,
    /// Height in pixels (≥ 1).
    pub height: u32,
    /// `width × height` luma samples, row by row.
    pub pixels: Vec<u8>,
}

/// A 64-bit perceptual hash. Bit 63 is the DC term, bit `63 − i` the `i`-th coefficient of the
/// 8×8 low-frequency block read row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PHash64(pub u64);

impl PHash64 {
    /// Number of differing bits.
    pub fn distance(self, other: PHash64) -> u32 {
        (self.0 ^ other.0).count_ones()
    }

    /// The 64 bits as 0/1 values, index `j` = bit `63 − j` (DC first).
    pub fn bits(self) -> [u8; 64] {
        std::array::from_fn(|j| ((self.0 >> (63 - j)) & 1) as u8)
    }

    /// The inverse of [`PHash64::bits`]; any non-zero value counts as a one.
    pub fn from_bits(bits: &[u8; 64]) -> Self {
        PHash64(bits.iter().fold(0u64, |h, &b| (h << 1) | u64::from(b != 0)))
    }
}

impl fmt::Display for PHash64 {
    /// `0x%016x`, as the reference prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

impl std::str::FromStr for PHash64 {
    type Err = std::num::ParseIntError;

    /// Accepts `0x`-prefixed or bare hexadecimal.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("0x").unwrap_or(s);
        u64::from_str_radix(hex, 16).map(PHash64)
    }
}

/// Decode `bytes` and compute its pHash-64 with the default [`Limits`].
///
/// # Errors
/// See [`decode_luma`].
pub fn phash64(bytes: &[u8]) -> Result<PHash64, Error> {
    Ok(hash_luma(&decode_luma(bytes, &Limits::default())?))
}

/// Decode an image file to 8-bit luma, converting colour as Pillow's `convert("L")` does.
///
/// 16-bit samples are reduced to their high byte (Pillow does this for 16-bit colour PNGs; for
/// 16-bit greyscale it clips at 255 instead, which we do not copy). GIFs give their first frame.
///
/// # Errors
/// [`Error::UnknownFormat`] for bytes that are no supported image, [`Error::TooLarge`] when the
/// header declares more than `limits.max_pixels` pixels, [`Error::Empty`] for a zero dimension and
/// [`Error::Decode`] for truncated or corrupt data.
pub fn decode_luma(bytes: &[u8], limits: &Limits) -> Result<LumaImage, Error> {
    let format = image::guess_format(bytes).map_err(|_| Error::UnknownFormat)?;
    let name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        _ => return Err(Error::UnknownFormat),
    };
    let decode_err = |e: image::ImageError| Error::Decode {
        format: name,
        reason: e.to_string(),
    };
    // JPEG decoders fill a missing tail with grey and call the image whole; a file cut short
    // is refused here instead.
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        return Err(Error::Decode {
            format: name,
            reason: "the file ends before its last scan does (truncated)".into(),
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The decoder enforces its own allocation cap as a second line of defence.
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(image_limits);
    let decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::Empty { width, height });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(Error::TooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    let image = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    Ok(to_luma(image))
}

/// Whether a JPEG's last scan is followed by its end-of-image marker. Inside entropy-coded data
/// every 0xFF byte is followed by 0x00 or a restart marker, so `FF D9` after the last start of
/// scan (`FF DA`) is the end of the image, and `FF DA` cannot appear in scan data either. An
/// embedded thumbnail's markers come before the main image's scans.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let marker = |m: u8| move |w: &[u8]| w[0] == 0xFF && w[1] == m;
    match bytes.windows(2).rposition(marker(0xDA)) {
        Some(scan) => bytes[scan..].windows(2).any(marker(0xD9)),
        None => false,
    }
}

/// Pillow's `L = (R·19595 + G·38470 + B·7471 + 0x8000) >> 16`.
#[inline]
fn luma601(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

fn to_luma(image: DynamicImage) -> LumaImage {
    let (width, height) = (image.width(), image.height());
    let pixels = match image {
        DynamicImage::ImageLuma8(buf) => buf.into_raw(),
        DynamicImage::ImageLumaA8(buf) => buf.into_raw().chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageRgb8(buf) => buf
            .into_raw()
            .chunks_exact(3)
            .map(|p| luma601(p[0], p[1], p[2]))
            .collect(),
        DynamicImage::ImageRgba8(buf) => buf
            .into_raw()
            .chunks_exact(4)
            .map(|p| luma601(p[0], p[1], p[2]))
            .collect(),
        DynamicImage::ImageLuma16(buf) => buf.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageLumaA16(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .map(|p| (p[0] >> 8) as u8)
            .collect(),
        DynamicImage::ImageRgb16(buf) => buf
            .into_raw()
            .chunks_exact(3)
            .map(|p| luma601((p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8))
            .collect(),
        DynamicImage::ImageRgba16(buf) => buf
            .into_raw()
            .chunks_exact(4)
            .map(|p| luma601((p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8))
            .collect(),
        // Float and any future layouts: go through 8-bit RGB first.
        other => other
            .into_rgb8()
            .into_raw()
            .chunks_exact(3)
            .map(|p| luma601(p[0], p[1], p[2]))
            .collect(),
    };
    LumaImage {
        width,
        height,
        pixels,
    }
}

/// The pHash-64 of an already decoded luma image.
///
/// # Panics
/// Never for images made by [`decode_luma`]; a hand-made [`LumaImage`] whose `pixels` length is not
/// `width × height` panics.
pub fn hash_luma(image: &LumaImage) -> PHash64 {
    assert_eq!(
        image.pixels.len() as u64,
        u64::from(image.width) * u64::from(image.height),
        "LumaImage pixels do not match its dimensions"
    );
    let small = resample::resize_lanczos3(image, REDUCED, REDUCED);
    hash_reduced(&small)
}

/// Steps 4–6 on a 32×32 luma block.
fn hash_reduced(small: &[u8]) -> PHash64 {
    let low = dct::low_block(small);
    let mut ac: [f64; LOW * LOW - 1] = low[1..].try_into().expect("63 AC terms");
    ac.sort_by(f64::total_cmp);
    // 63 values: the median is the 32nd smallest.
    let median = ac[ac.len() / 2];
    PHash64(
        low.iter()
            .fold(0u64, |h, &v| (h << 1) | u64::from(v > median)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let h = PHash64(0x00ab_cdef_0123_4567);
        assert_eq!(h.to_string(), "0x00abcdef01234567");
        assert_eq!("0x00abcdef01234567".parse::<PHash64>().unwrap(), h);
        assert_eq!(PHash64::from_bits(&h.bits()), h);
        assert_eq!(h.bits()[0], 0, "DC is bit 63");
    }

    #[test]
    fn luma_weights_match_pillow() {
        assert_eq!(luma601(255, 255, 255), 255);
        assert_eq!(luma601(0, 0, 0), 0);
        assert_eq!(luma601(255, 0, 0), 76);
        assert_eq!(luma601(0, 255, 0), 150);
        assert_eq!(luma601(0, 0, 255), 29);
    }
}
