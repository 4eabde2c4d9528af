//! RFC 6962 (Certificate Transparency) Merkle trees over audit events, and signed tree heads.
//!
//! The control plane keeps, per tenant, an append-only log of every stored event's hash. A leaf
//! is `SHA-256(0x00 || event hash)`, an interior node `SHA-256(0x01 || left || right)`; the tree
//! of `n` leaves splits at the largest power of two below `n` (RFC 6962 §2.1), which is the same
//! as building it bottom-up level by level and carrying an odd last node up unchanged. A
//! [`SignedTreeHead`] (size, root, time) is signed with the control plane's Ed25519 key; an
//! inclusion proof shows that one event is leaf `i` of the tree behind a signed head, and a
//! consistency proof (RFC 6962 §2.1.2) that a later head's tree extends an earlier one's —
//! nothing the earlier head covered was changed, removed or reordered since.
//!
//! Pure: no I/O, no clock (the caller passes `now`).

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// Domain separator of a signed tree head (so that it can never be mistaken for anything else
/// signed with the same key).
pub const TREE_HEAD_DOMAIN: &str = "sase-audit-tree-head-v1";

/// Leaf hash of an event whose chain hash is `event_hash`.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(event_hash);
    h.finalize().into()
}

/// Interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Parses a 64-character hex SHA-256.
pub fn parse_hash(text: &str) -> Option<Hash> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// A whole tree held in memory, level by level, for roots and inclusion proofs of any leaf.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[0]` are the leaf hashes; the last level holds the root alone.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// Builds the tree over the given leaf hashes (already [`leaf_hash`]ed).
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> MerkleTree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let mut up = Vec::with_capacity(below.len().div_ceil(2));
            for pair in below.chunks(2) {
                match pair {
                    [l, r] => up.push(node_hash(l, r)),
                    [odd] => up.push(*odd),
                    _ => {}
                }
            }
            levels.push(up);
        }
        MerkleTree { levels }
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// The tree over the first `n` leaves (what a checkpoint of size `n` covers); `None` when
    /// `n` exceeds the size.
    pub fn prefix(&self, n: u64) -> Option<MerkleTree> {
        let n = usize::try_from(n).ok()?;
        let leaves = self.leaves().get(..n)?;
        Some(MerkleTree::from_leaf_hashes(leaves.to_vec()))
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The root (`SHA-256("")` for an empty tree).
    pub fn root(&self) -> Hash {
        match self.levels.last() {
            Some(top) if top.len() == 1 => top[0],
            _ => empty_root(),
        }
    }

    /// The inclusion proof (RFC 6962 audit path, leaf side first) of leaf `index`; `None` when
    /// out of range.
    pub fn inclusion_proof(&self, index: u64) -> Option<Vec<Hash>> {
        let mut i = usize::try_from(index).ok()?;
        if i >= self.levels.first()?.len() {
            return None;
        }
        let mut proof = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            i /= 2;
        }
        Some(proof)
    }
}

/// RFC 6962 §2.1.2 `SUBPROOF(m, D[leaves], complete)`, appended to `out`.
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root_of(leaves));
        }
        return;
    }
    // The largest power of two smaller than n (n >= 2 here, since 0 < m < n).
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root_of(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root_of(&leaves[..k]));
    }
}

impl MerkleTree {
    /// The consistency proof (RFC 6962 §2.1.2) between the tree of the first `first` leaves and
    /// the tree of the first `second` leaves; `None` unless `0 < first <= second <= size`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Option<Vec<Hash>> {
        let m = usize::try_from(first).ok()?;
        let n = usize::try_from(second).ok()?;
        if m == 0 || m > n {
            return None;
        }
        let leaves = self.leaves().get(..n)?;
        let mut proof = Vec::new();
        if m < n {
            subproof(m, leaves, true, &mut proof);
        }
        Some(proof)
    }
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): that the tree of `second` leaves with root
/// `second_root` extends the tree of `first` leaves with root `first_root`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let mut fn_ = first - 1;
    let mut sn = second - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *first_root && sr == *second_root
}

/// Root of the tree over the first `n` of `leaves` (recomputed; used to check that a stored
/// log still has the prefix a signed head covers).
pub fn root_of(leaves: &[Hash]) -> Hash {
    MerkleTree::from_leaf_hashes(leaves.to_vec()).root()
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): that `leaf` is leaf `index` of the tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Errors of signed tree heads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeHeadError {
    /// The signature is not valid base64 / 64 bytes.
    #[error("the tree head signature is malformed")]
    MalformedSignature,
    /// The root is not a 64-character hex SHA-256.
    #[error("the tree head root is not a SHA-256 in hex")]
    MalformedRoot,
    /// The signature does not verify with the given key.
    #[error("the tree head signature does not verify with the control-plane key")]
    BadSignature,
}

/// A checkpoint: the size and root of a tenant's audit log at a time, signed by the control
/// plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTreeHead {
    /// Tenant whose log this is.
    pub tenant_id: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// Root hash, hex.
    pub root_hash: String,
    /// When it was signed (Unix ms, control-plane clock).
    pub timestamp_ms: i64,
    /// Ed25519 signature over [`SignedTreeHead::signing_bytes`], base64.
    pub signature: String,
}

#[derive(Serialize)]
struct TreeHeadBody<'a> {
    domain: &'a str,
    tenant_id: &'a str,
    tree_size: u64,
    root_hash: &'a str,
    timestamp_ms: i64,
}

impl SignedTreeHead {
    /// Signs a tree head.
    pub fn sign(
        tenant_id: &str,
        tree_size: u64,
        root: &Hash,
        now_ms: i64,
        key: &SigningKey,
    ) -> SignedTreeHead {
        let mut head = SignedTreeHead {
            tenant_id: tenant_id.to_string(),
            tree_size,
            root_hash: hex::encode(root),
            timestamp_ms: now_ms,
            signature: String::new(),
        };
        let signature = key.sign(&head.signing_bytes());
        head.signature = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
        head
    }

    /// The bytes that are signed: canonical JSON of the fields plus [`TREE_HEAD_DOMAIN`].
    pub fn signing_bytes(&self) -> Vec<u8> {
        let body = TreeHeadBody {
            domain: TREE_HEAD_DOMAIN,
            tenant_id: &self.tenant_id,
            tree_size: self.tree_size,
            root_hash: &self.root_hash,
            timestamp_ms: self.timestamp_ms,
        };
        // A struct of strings and integers always serialises.
        crate::canonical::to_canonical_json(&body).unwrap_or_default()
    }

    /// The root as bytes.
    ///
    /// # Errors
    /// When it is not a hex SHA-256.
    pub fn root(&self) -> Result<Hash, TreeHeadError> {
        parse_hash(&self.root_hash).ok_or(TreeHeadError::MalformedRoot)
    }

    /// Checks the signature with the control plane's key.
    ///
    /// # Errors
    /// Malformed or not matching.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), TreeHeadError> {
        self.root()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| TreeHeadError::MalformedSignature)?;
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| TreeHeadError::MalformedSignature)?;
        key.verify(&self.signing_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| TreeHeadError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&Sha256::digest(i.to_be_bytes()).into()))
            .collect()
    }

    /// RFC 6962 §2.1 MTH, recursively, as the reference.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// RFC 6962 §2.1.1 PATH, recursively, as the reference.
    fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = n.next_power_of_two() / 2;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        let tree = MerkleTree::from_leaf_hashes(Vec::new());
        assert_eq!(
            hex::encode(tree.root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(tree.inclusion_proof(0), None);
    }

    #[test]
    fn roots_and_proofs_match_rfc6962_and_verify_for_every_size_and_leaf() {
        for n in 1..=70u64 {
            let ls = leaves(n);
            let tree = MerkleTree::from_leaf_hashes(ls.clone());
            let root = tree.root();
            assert_eq!(root, mth(&ls), "root of size {n}");
            for i in 0..n {
                let proof = tree.inclusion_proof(i).expect("in range");
                assert_eq!(proof, path(i as usize, &ls), "proof {i} of {n}");
                assert!(verify_inclusion(&ls[i as usize], i, n, &proof, &root));
                // Wrong index, wrong leaf, wrong size, truncated or extended proof: refused.
                if n > 1 {
                    assert!(!verify_inclusion(
                        &ls[i as usize],
                        (i + 1) % n,
                        n,
                        &proof,
                        &root
                    ));
                    assert!(!verify_inclusion(
                        &ls[((i + 1) % n) as usize],
                        i,
                        n,
                        &proof,
                        &root
                    ));
                    assert!(!verify_inclusion(
                        &ls[i as usize],
                        i,
                        n,
                        &proof[..proof.len() - 1],
                        &root
                    ));
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert!(!verify_inclusion(&ls[i as usize], i, n, &longer, &root));
            }
            assert_eq!(tree.inclusion_proof(n), None);
        }
    }

    #[test]
    fn larger_trees_prove_sampled_leaves() {
        for n in [127u64, 128, 129, 1000, 1023, 1025, 4097] {
            let ls = leaves(n);
            let tree = MerkleTree::from_leaf_hashes(ls.clone());
            let root = tree.root();
            assert_eq!(root, mth(&ls));
            for i in [0, 1, n / 3, n / 2, n - 2, n - 1] {
                let proof = tree.inclusion_proof(i).expect("in range");
                assert!(verify_inclusion(&ls[i as usize], i, n, &proof, &root));
            }
        }
    }

    #[test]
    fn a_changed_leaf_changes_the_root_and_fails_its_proof() {
        let mut ls = leaves(11);
        let tree = MerkleTree::from_leaf_hashes(ls.clone());
        let proof = tree.inclusion_proof(6).expect("in range");
        ls[6] = leaf_hash(&[7u8; 32]);
        assert_ne!(root_of(&ls), tree.root());
        assert_eq!(
            tree.prefix(6).map(|t| t.root()),
            Some(root_of(&leaves(11)[..6]))
        );
        assert!(tree.prefix(12).is_none());
        assert!(!verify_inclusion(&ls[6], 6, 11, &proof, &tree.root()));
    }

    #[test]
    fn tree_heads_sign_and_verify_and_refuse_changes() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let tree = MerkleTree::from_leaf_hashes(leaves(5));
        let head = SignedTreeHead::sign("ten_1", 5, &tree.root(), 1_000, &key);
        assert_eq!(head.verify(&key.verifying_key()), Ok(()));
        let mut bigger = head.clone();
        bigger.tree_size = 6;
        assert_eq!(
            bigger.verify(&key.verifying_key()),
            Err(TreeHeadError::BadSignature)
        );
        let mut other_tenant = head.clone();
        other_tenant.tenant_id = "ten_2".into();
        assert_eq!(
            other_tenant.verify(&key.verifying_key()),
            Err(TreeHeadError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            head.verify(&other.verifying_key()),
            Err(TreeHeadError::BadSignature)
        );
        let mut garbled = head;
        garbled.signature = "!!".into();
        assert_eq!(
            garbled.verify(&key.verifying_key()),
            Err(TreeHeadError::MalformedSignature)
        );
    }

    #[test]
    fn consistency_proofs_verify_for_every_pair_of_sizes() {
        let leaves: Vec<Hash> = (0u8..33).map(|i| leaf_hash(&[i; 32])).collect();
        let tree = MerkleTree::from_leaf_hashes(leaves.clone());
        for second in 1..=33u64 {
            let second_root = root_of(&leaves[..second as usize]);
            for first in 1..=second {
                let first_root = root_of(&leaves[..first as usize]);
                let proof = tree.consistency_proof(first, second).expect("in range");
                assert!(
                    verify_consistency(first, second, &first_root, &second_root, &proof),
                    "{first} -> {second}"
                );
                if first < second {
                    // A changed leaf inside the first tree or a tampered path fails (sizes are bound to
                    // roots by the signed heads).
                    let mut changed = leaves[..second as usize].to_vec();
                    changed[0] = leaf_hash(&[0xff; 32]);
                    assert!(!verify_consistency(
                        first,
                        second,
                        &root_of(&changed[..first as usize]),
                        &second_root,
                        &proof
                    ));
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_consistency(
                        first,
                        second,
                        &first_root,
                        &second_root,
                        &bad
                    ));
                }
            }
        }
        assert!(tree.consistency_proof(0, 3).is_none());
        assert!(tree.consistency_proof(4, 3).is_none());
        assert!(tree.consistency_proof(3, 34).is_none());
    }

    #[test]
    fn consistency_proof_matches_rfc_6962_shape() {
        // RFC 6962 §2.1.3: the proof between D[3] and D[7] is [c, d, g, l].
        let leaves: Vec<Hash> = (0u8..7).map(|i| leaf_hash(&[i; 32])).collect();
        let tree = MerkleTree::from_leaf_hashes(leaves.clone());
        let proof = tree.consistency_proof(3, 7).expect("proof");
        let c = leaves[2];
        let d = leaves[3];
        let g = node_hash(&leaves[0], &leaves[1]);
        let l = root_of(&leaves[4..7]);
        assert_eq!(proof, vec![c, d, g, l]);
        // D[4] -> D[7] is [l]; D[6] -> D[7] is [i, j, k? ...] per the RFC: [i, j, g].
        assert_eq!(tree.consistency_proof(4, 7).expect("proof"), vec![l]);
        let i = node_hash(&leaves[4], &leaves[5]);
        let j = leaves[6];
        let k = node_hash(&leaves[2], &leaves[3]);
        let h = node_hash(&g, &k);
        assert_eq!(tree.consistency_proof(6, 7).expect("proof"), vec![i, j, h]);
    }
}
