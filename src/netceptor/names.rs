//! Node-name hashes of data packets: HighwayHash-64 with an all-zero key over the name's
//! bytes (Go `minio/highwayhash.New64`), and the table that maps hashes back to names.
//!
//! A receiver can deliver or forward a data packet only when it knows both hashes; Go
//! learns names from routing updates (first sight of a node), new neighbours, dial
//! targets and local services, and drops packets with unknown hashes. The table here
//! learns the same way and is bounded (`limits.netceptor_max_nodes` plus local services).

use std::collections::HashMap;

use highway::{HighwayHash, HighwayHasher, Key};

/// The 64-bit name hash carried in data packets.
pub fn name_hash(name: &str) -> u64 {
    HighwayHasher::new(Key([0; 4])).hash64(name.as_bytes())
}

/// Hash → name, for the names this node has learned.
#[derive(Debug, Default)]
pub struct NameTable {
    by_hash: HashMap<u64, String>,
}

impl NameTable {
    /// Records `name`; returns its hash.
    pub fn learn(&mut self, name: &str) -> u64 {
        let h = name_hash(name);
        self.by_hash.entry(h).or_insert_with(|| name.to_owned());
        h
    }

    pub fn name(&self, hash: u64) -> Option<&str> {
        self.by_hash.get(&hash).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Forgets `name` (a node aged out of the database).
    pub fn forget(&mut self, name: &str) {
        let h = name_hash(name);
        if self.by_hash.get(&h).is_some_and(|n| n == name) {
            self.by_hash.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes Go Receptor 1.4.0 put on the wire (captured between Go nodes).
    #[test]
    fn matches_go_hashes() {
        assert_eq!(name_hash("gonode1"), 0xf0a82caec3d7343a);
        assert_eq!(name_hash("gonode2"), 0xaf7bd013be877758);
        assert_eq!(name_hash("gonode3"), 0x94907aab548e625c);
        assert_eq!(name_hash("localhost"), 0x99c4380a442ae062);
    }

    #[test]
    fn table_learns_and_forgets() {
        let mut t = NameTable::default();
        let h = t.learn("gonode1");
        assert_eq!(t.name(h), Some("gonode1"));
        t.forget("gonode1");
        assert_eq!(t.name(h), None);
        assert!(t.is_empty());
    }
}
