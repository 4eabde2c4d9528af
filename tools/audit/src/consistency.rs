//! Offline check of a consistency proof between two signed tree heads of a tenant's audit log:
//! both heads signed by the control plane's key, for the same tenant, the earlier no larger
//! than the later, and the RFC 6962 proof connecting their roots. An auditor keeps the heads
//! they have seen and runs this against each new one: a rewritten log cannot pass.

use ed25519_dalek::VerifyingKey;
use sase_model::merkle::{parse_hash, verify_consistency, SignedTreeHead, TreeHeadError};

/// Why a consistency check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// The earlier head does not verify.
    #[error("the earlier tree head: {0}")]
    OldHead(TreeHeadError),
    /// The later head does not verify.
    #[error("the later tree head: {0}")]
    NewHead(TreeHeadError),
    /// The heads belong to different tenants.
    #[error("the heads are of different tenants ({old} and {new})")]
    TenantMismatch {
        /// Earlier head's tenant.
        old: String,
        /// Later head's tenant.
        new: String,
    },
    /// The earlier head is larger than the later one.
    #[error("the earlier head ({old}) is larger than the later one ({new})")]
    Shrunk {
        /// Earlier size.
        old: u64,
        /// Later size.
        new: u64,
    },
    /// A proof entry is not a hex SHA-256.
    #[error("proof entry {0} is not a SHA-256 in hex")]
    MalformedProof(usize),
    /// The proof does not connect the two roots.
    #[error("the log of size {new} does not extend the log of size {old}: entries the earlier head covered were changed, removed or reordered")]
    Inconsistent {
        /// Earlier size.
        old: u64,
        /// Later size.
        new: u64,
    },
}

/// Checks that `new` extends `old` with `proof` (hex node hashes), both signed with `key`.
///
/// # Errors
/// The first reason the check fails.
pub fn check(
    old: &SignedTreeHead,
    new: &SignedTreeHead,
    proof: &[String],
    key: &VerifyingKey,
) -> Result<(), ConsistencyError> {
    old.verify(key).map_err(ConsistencyError::OldHead)?;
    new.verify(key).map_err(ConsistencyError::NewHead)?;
    if old.tenant_id != new.tenant_id {
        return Err(ConsistencyError::TenantMismatch {
            old: old.tenant_id.clone(),
            new: new.tenant_id.clone(),
        });
    }
    if old.tree_size > new.tree_size {
        return Err(ConsistencyError::Shrunk {
            old: old.tree_size,
            new: new.tree_size,
        });
    }
    let nodes = proof
        .iter()
        .enumerate()
        .map(|(i, h)| parse_hash(h).ok_or(ConsistencyError::MalformedProof(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let old_root = old.root().map_err(ConsistencyError::OldHead)?;
    let new_root = new.root().map_err(ConsistencyError::NewHead)?;
    if verify_consistency(old.tree_size, new.tree_size, &old_root, &new_root, &nodes) {
        Ok(())
    } else {
        Err(ConsistencyError::Inconsistent {
            old: old.tree_size,
            new: new.tree_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use sase_model::merkle::{leaf_hash, MerkleTree};

    fn heads(
        changed_leaf: Option<usize>,
    ) -> (SignedTreeHead, SignedTreeHead, Vec<String>, VerifyingKey) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let leaves: Vec<_> = (0u8..10).map(|i| leaf_hash(&[i; 32])).collect();
        let tree = MerkleTree::from_leaf_hashes(leaves.clone());
        let old_tree = tree.prefix(6).expect("prefix");
        let old = SignedTreeHead::sign("t", 6, &old_tree.root(), 1, &key);
        // The later tree, possibly over a rewritten log.
        let mut later = leaves;
        if let Some(i) = changed_leaf {
            later[i] = leaf_hash(&[0xee; 32]);
        }
        let later = MerkleTree::from_leaf_hashes(later);
        let new = SignedTreeHead::sign("t", 10, &later.root(), 2, &key);
        let proof = later
            .consistency_proof(6, 10)
            .expect("proof")
            .iter()
            .map(hex::encode)
            .collect();
        (old, new, proof, key.verifying_key())
    }

    #[test]
    fn an_extended_log_is_consistent() {
        let (old, new, proof, key) = heads(None);
        assert_eq!(check(&old, &new, &proof, &key), Ok(()));
    }

    #[test]
    fn a_rewritten_log_is_not_even_when_re_signed() {
        let (old, new, proof, key) = heads(Some(2));
        assert!(matches!(
            check(&old, &new, &proof, &key),
            Err(ConsistencyError::Inconsistent { old: 6, new: 10 })
        ));
        // A change after the earlier head's range is just growth.
        let (old, new, proof, key) = heads(Some(8));
        assert_eq!(check(&old, &new, &proof, &key), Ok(()));
    }

    #[test]
    fn heads_must_be_signed_ordered_and_of_one_tenant() {
        let (old, new, proof, key) = heads(None);
        let other = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        assert!(matches!(
            check(&old, &new, &proof, &other),
            Err(ConsistencyError::OldHead(_))
        ));
        assert!(matches!(
            check(&new, &old, &proof, &key),
            Err(ConsistencyError::Shrunk { .. })
        ));
        let mut bad = proof.clone();
        bad[0] = "zz".into();
        assert_eq!(
            check(&old, &new, &bad, &key),
            Err(ConsistencyError::MalformedProof(0))
        );
    }
}
