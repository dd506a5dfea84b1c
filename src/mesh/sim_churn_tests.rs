//! Random churn, simulated: links and nodes come and go by a seeded generator, and after
//! each step every node's routes match the global shortest paths. Part of `sim_tests`
//! (uses its `Sim`).

use super::*;

#[test]
fn random_churn_always_matches_global_shortest_paths() {
    for seed in (1..=24u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1) {
        let n = 8;
        let mut s = Sim::with(n, 30, &[6]);
        let mut rng = Rng(seed);
        for step in 0..300 {
            let what = rng.below(100);
            let ctx = format!("seed {seed:#x} step {step}");
            match what {
                0..70 => {
                    let (a, b) = (rng.below(n), rng.below(n));
                    if a == b {
                        continue;
                    }
                    if s.wires_between(a, b).is_empty() {
                        let (ca, cb) = (1 + rng.below(4), 1 + rng.below(4));
                        assert!(s.connect_costs(a, b, ca as f64, cb as f64), "{ctx}: {a}-{b} refused");
                    } else {
                        s.cut(a, b);
                    }
                }
                70..82 => s.advance(Duration::from_secs(1 + rng.below(15) as u64)),
                82..88 => s.restart(rng.below(n)),
                88..92 => {
                    let i = rng.below(n);
                    s.nodes[i].leave();
                    s.settle();
                    s.restart(i);
                }
                _ => {
                    let i = rng.below(n);
                    let work = (0..rng.below(3)).map(|k| wt(&format!("w{k}"), &step.to_string())).collect();
                    s.set_work(i, work);
                }
            }
            s.assert_converged(&ctx);
            assert!(s.duplicate_self.iter().all(Option::is_none), "{ctx}: a node was told it is a twin");
        }
    }
}
