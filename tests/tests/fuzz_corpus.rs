//! The short fuzz pass CI runs: every fuzz target (`tests/src/fuzz.rs`) over its seeds, the
//! corpus kept in `fuzz/corpus/<target>/`, and a few thousand deterministic mutations of them
//! (bit flips, cuts, insertions, splices). The long coverage-guided runs are `scripts/fuzz`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MUTATIONS: usize = 2_000;

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..4) {
        let len = input.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => input.truncate(rng.random_range(0..len)),
            2 => {
                let i = rng.random_range(0..=len);
                let b: u8 = rng.random();
                input.insert(i, b);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = *b"\"{}[],:0\\\n\xff"
                    .get(rng.random_range(0..12))
                    .unwrap_or(&0);
            }
            4 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let i = rng.random_range(0..=len);
                    let tail = input.split_off(i);
                    input.extend_from_slice(&other[from..]);
                    input.extend_from_slice(&tail);
                }
            }
            _ if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..len);
                input.drain(i..=j);
            }
            _ => {}
        }
    }
    input
}

#[test]
fn every_parser_survives_its_seeds_and_their_mutations() {
    let corpus_root = labmesh_tests::repo_path("fuzz/corpus");
    for (name, target) in labmesh_tests::fuzz::TARGETS {
        let mut seeds = labmesh_tests::fuzz::seeds(name);
        if let Ok(dir) = std::fs::read_dir(corpus_root.join(name)) {
            for entry in dir.flatten() {
                seeds.push(std::fs::read(entry.path()).unwrap());
            }
        }
        if std::env::var_os("LABMESH_FUZZ_WRITE_SEEDS").is_some() {
            let dir = corpus_root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, seed) in labmesh_tests::fuzz::seeds(name).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
            }
        }
        seeds.push(Vec::new());
        for seed in &seeds {
            target(seed);
        }
        let mut rng = StdRng::seed_from_u64(0x1ab_3e5);
        for _ in 0..MUTATIONS {
            target(&mutate(&mut rng, &seeds));
        }
        eprintln!("{name}: {} seeds, {MUTATIONS} mutations", seeds.len());
    }
}
