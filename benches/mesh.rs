//! Mesh benchmarks (`make bench`): prints figures, asserts nothing about time.
fn main() {}
