//! Write every target's seeds as `OUT/NAME/seed-N` (OUT defaults to `fuzz/corpus`). Seeds a
//! fuzzer run added (other names) are left alone; `fuzz/seed.sh` removes stale `seed-*` files
//! first.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    for (target, seeds) in obscura_fuzz::seeds() {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}
