//! Derived variants of a photo, made at run time: the edits an image meets on its way between
//! organisations (re-compression, scaling, sensor noise, exposure). Deterministic for a seed.

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::DynamicImage;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::Error;

use crate::profile::{map_levels, noise, png};

/// One kind of edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// JPEG re-encode at quality 75.
    Jpeg75,
    /// Scaled to half size (Lanczos3), PNG.
    Half,
    /// Gaussian noise, σ = 8 grey levels, PNG.
    Noise,
    /// Brightness × 1.2, clipped, PNG.
    Bright,
}

impl Edit {
    /// Every edit, in report order.
    pub const ALL: [Edit; 4] = [Edit::Jpeg75, Edit::Half, Edit::Noise, Edit::Bright];

    /// Short name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Edit::Jpeg75 => "jpeg75",
            Edit::Half => "half",
            Edit::Noise => "noise8",
            Edit::Bright => "bright1.2",
        }
    }

    /// Apply the edit to a decoded photo and encode the result. `seed` drives the noise.
    ///
    /// # Errors
    /// An encoder failure, as text.
    pub fn apply(self, photo: &DynamicImage, seed: u64) -> Result<Vec<u8>, Error> {
        let rgb = photo.to_rgb8();
        match self {
            Edit::Jpeg75 => {
                let mut out = Vec::new();
                rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, 75))
                    .map_err(|e| e.to_string())?;
                Ok(out)
            }
            Edit::Half => {
                let (w, h) = (rgb.width().div_ceil(2), rgb.height().div_ceil(2));
                png(&image::imageops::resize(&rgb, w, h, FilterType::Lanczos3))
            }
            Edit::Noise => png(&noise(rgb, 8.0, &mut ChaCha20Rng::seed_from_u64(seed))),
            Edit::Bright => png(&map_levels(rgb, |v| v * 1.2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use image::RgbImage;

    fn photo() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        }))
    }

    #[test]
    fn every_edit_decodes_and_changes_the_pixels() {
        let original = photo();
        for edit in Edit::ALL {
            let bytes = edit.apply(&original, 7).unwrap();
            let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
            if edit == Edit::Half {
                assert_eq!(back.dimensions(), (32, 24));
            } else {
                assert_eq!(back.dimensions(), (64, 48), "{}", edit.name());
                assert_ne!(back, original.to_rgb8(), "{}", edit.name());
            }
        }
    }

    #[test]
    fn noise_is_deterministic_for_a_seed() {
        let original = photo();
        let a = Edit::Noise.apply(&original, 1).unwrap();
        assert_eq!(a, Edit::Noise.apply(&original, 1).unwrap());
        assert_ne!(a, Edit::Noise.apply(&original, 2).unwrap());
    }
}
