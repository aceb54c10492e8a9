//! The waiting room's fairness, recomputed from outside the engine: the
//! pre-queue's order from the revealed seed (the algorithm the README's
//! "The waiting room" publishes, so that anyone can check it), the seed
//! against its commitment, and the rank correlation of two orders.

use sha2::{Digest, Sha256};

/// Whether the revealed `seed` (hex) hashes to the `commitment` shown
/// before the pre-queue opened.
pub fn seed_matches(seed: &str, commitment: &str) -> bool {
    hex::decode(seed).is_ok_and(|bytes| hex::encode(Sha256::digest(bytes)) == commitment)
}

/// The pre-queue joiners in the order the seed places them: ascending hex
/// SHA-256 of the seed's bytes then the shopper id's. Empty when the seed
/// is not hex.
pub fn shuffled<'a>(seed: &str, shoppers: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let Ok(seed) = hex::decode(seed) else {
        return Vec::new();
    };
    let mut keyed: Vec<(String, &str)> = shoppers
        .into_iter()
        .map(|shopper| {
            let mut hash = Sha256::new();
            hash.update(&seed);
            hash.update(shopper.as_bytes());
            (hex::encode(hash.finalize()), shopper)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, shopper)| shopper).collect()
}

/// Spearman's rank correlation of two equally long lists of distinct
/// values; 0 for fewer than two.
pub fn spearman(a: &[u64], b: &[u64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len().min(rb.len());
    if n < 2 {
        return 0.0;
    }
    let mean = (n as f64 - 1.0) / 2.0;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean).powi(2);
        vb += (y - mean).powi(2);
    }
    cov / (va * vb).sqrt()
}

/// Each value's 0-based rank.
fn ranks(values: &[u64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&index| values[index]);
    let mut ranks = vec![0.0; values.len()];
    for (rank, index) in order.into_iter().enumerate() {
        ranks[index] = rank as f64;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_is_one_for_the_same_order_and_minus_one_reversed() {
        // Goal: the statistic the queue verdict bounds has the right sign and scale.
        let a = [1, 2, 3, 4, 5];
        assert!((spearman(&a, &[10, 20, 30, 40, 50]) - 1.0).abs() < 1e-9);
        assert!((spearman(&a, &[50, 40, 30, 20, 10]) + 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_shuffle_is_the_engines() {
        // Goal: the loadtest recomputes the order the engine publishes:
        // ascending SHA-256(seed bytes ++ shopper id), the seed committed
        // by its own SHA-256.
        let seed = "00".repeat(32);
        let commitment = hex::encode(Sha256::digest([0u8; 32]));
        assert!(seed_matches(&seed, &commitment));
        assert!(!seed_matches(&"01".repeat(32), &commitment));
        let key = |shopper: &str| {
            let mut hash = Sha256::new();
            hash.update([0u8; 32]);
            hash.update(shopper.as_bytes());
            hex::encode(hash.finalize())
        };
        let order = shuffled(&seed, ["a", "b", "c", "d"]);
        let keys: Vec<String> = order.iter().map(|shopper| key(shopper)).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(order.len(), 4);
    }
}
