//! Origin signatures on event files: every event is bound to the node that wrote it.
//!
//! An event file stays one line of compact JSON in the seed's layout, and its verbatim bytes
//! stay its identity (the content hash sync reconciles on). The signature is one more top-level
//! field, always the last one: `"sig":"1.<key>.<index>.<count>.<path>.<signature>"`.
//!
//! - `key`: 16 hex digits, the first 8 bytes of the SHA-256 of the signer's mesh certificate.
//! - The signed content is the file **without** that field (the bytes before `,"sig":"…"` and
//!   the closing brace after it), so a signature never covers itself and the file needs no
//!   re-serialisation to be checked: [`split`] cuts the field out byte for byte.
//! - Events a node stores together (one group commit) share one ECDSA signature over the root
//!   of a small Merkle tree of their unsigned contents, cut in chunks of at most
//!   [`MAX_BATCH_LEAVES`]. Each file carries its leaf `index`, the chunk's leaf `count` and the
//!   sibling hashes from its leaf to the root (`path`, 16 bytes each, base64url), so every file
//!   is checked on its own, wherever it travels, while one signature (about 20 µs) is paid per
//!   chunk instead of per event. A receiver that has checked a root once ([`VerifiedRoots`])
//!   checks the other files of the chunk with hashes only.
//! - `signature`: ECDSA P-256/SHA-256 in fixed 64-byte form, base64url, over
//!   [`batch_message`] = a domain tag, the event node's name, the key, the count and the root.
//!
//! The crypto is behind two small traits, [`EventSigner`] and [`SignerDirectory`], so this crate
//! stays free of certificates: the agent implements them with its mesh identity and the
//! certificates of the mesh CA it has seen (`node/src/trust.rs`). See `sync/ALGORITHM.md`,
//! "Trust".

use std::collections::HashSet;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The event field that holds the signature.
pub const SIG_FIELD: &str = "sig";
/// Leaves under one signature. Bigger pays fewer signatures and makes longer paths
/// (16 bytes per level: 64 leaves is 6 levels, ~130 characters per file).
pub const MAX_BATCH_LEAVES: usize = 64;
const FORMAT_VERSION: &str = "1";
const MESSAGE_TAG: &[u8] = b"labmesh event batch v1\0";

/// The first 8 bytes of the SHA-256 of a signer's certificate.
pub type KeyId = [u8; 8];
/// A Merkle tree node: SHA-256 truncated to 128 bits.
pub type TreeHash = [u8; 16];

/// Why a signature was refused. The messages name what an operator can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the event carries no `sig`: every event must be signed by the node it names (only that node's agent can sign it)"
    )]
    Unsigned,
    #[error("malformed `sig` field: {0}")]
    Malformed(String),
    #[error(
        "signed with key {0}, a certificate this node has not seen (the sender did not supply it, or it is not from this mesh's CA)"
    )]
    UnknownKey(String),
    #[error("signed with the certificate of {signer}, but the event names node {node}")]
    WrongNode { signer: String, node: String },
    #[error("signed with key {0}, whose certificate is revoked")]
    Revoked(String),
    #[error("the signature does not verify (the content was changed after signing, or forged)")]
    BadSignature,
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// Signs batch roots with this node's key.
pub trait EventSigner: Send + Sync {
    /// The key id files carry ([`key_id_of`] of this node's certificate).
    fn key_id(&self) -> KeyId;
    /// ECDSA P-256/SHA-256 over `message`, fixed 64-byte form.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignatureError>;
}

/// The certificates a node knows, by key id.
pub trait SignerDirectory: Send + Sync {
    /// Checks that `key` is a known, unrevoked certificate of the mesh CA naming `node` (cheap:
    /// asked for every file, also when its root was verified before).
    fn check_key(&self, key: &KeyId, node: &str) -> Result<(), SignatureError>;
    /// Checks that `signature` over `message` verifies with `key`'s public key.
    fn verify_signature(
        &self,
        key: &KeyId,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), SignatureError>;
    /// The DER certificate behind `key`, to hand to a peer along with files it signed.
    fn certificate(&self, key: &KeyId) -> Option<Vec<u8>>;
    /// Checks a certificate a peer supplied (chains to the mesh CA, names one node, not
    /// revoked) and remembers it. Returns its key id.
    fn learn(&self, der: &[u8]) -> Result<KeyId, String>;
}

/// The key id of a certificate: the first 8 bytes of its SHA-256.
pub fn key_id_of(cert_der: &[u8]) -> KeyId {
    let digest = Sha256::digest(cert_der);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// The parsed `sig` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigField {
    pub key: KeyId,
    pub index: u32,
    pub count: u32,
    pub path: Vec<TreeHash>,
    pub signature: [u8; 64],
}

impl SigField {
    /// The field's text (what goes between the quotes).
    pub fn to_text(&self) -> String {
        let path: Vec<u8> = self.path.iter().flatten().copied().collect();
        format!(
            "{FORMAT_VERSION}.{}.{}.{}.{}.{}",
            hex::encode(self.key),
            self.index,
            self.count,
            URL_SAFE_NO_PAD.encode(path),
            URL_SAFE_NO_PAD.encode(self.signature)
        )
    }

    /// Parses the field's text strictly: one spelling per value, so nobody can vary a file's
    /// bytes (and its hash) without changing what it says.
    pub fn parse(text: &str) -> Result<SigField, SignatureError> {
        let bad = |what: &str| SignatureError::Malformed(what.to_owned());
        let parts: Vec<&str> = text.split('.').collect();
        let [version, key, index, count, path, sig_text] = parts.as_slice() else {
            return Err(bad("expected 6 parts separated by dots"));
        };
        if *version != FORMAT_VERSION {
            return Err(SignatureError::Malformed(format!(
                "version {version:?} is not supported (this node reads version {FORMAT_VERSION}); upgrade labmesh"
            )));
        }
        if key.len() != 16 || !key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("the key id must be 16 lowercase hex digits"));
        }
        let mut key_id = [0u8; 8];
        hex::decode_to_slice(key, &mut key_id).map_err(|_| bad("the key id is not hex"))?;
        let number = |s: &str, what: &str| -> Result<u32, SignatureError> {
            if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || s.len() > 5 {
                return Err(bad(what));
            }
            s.parse().map_err(|_| bad(what))
        };
        let index = number(
            index,
            "the leaf index must be a number without leading zeros",
        )?;
        let count = number(
            count,
            "the leaf count must be a number without leading zeros",
        )?;
        if count == 0 || count as usize > MAX_BATCH_LEAVES || index >= count {
            return Err(SignatureError::Malformed(format!(
                "leaf {index} of {count} is out of range (1 to {MAX_BATCH_LEAVES} leaves)"
            )));
        }
        let raw_path = URL_SAFE_NO_PAD
            .decode(path)
            .map_err(|_| bad("the path is not unpadded base64url"))?;
        if raw_path.len() % 16 != 0 || URL_SAFE_NO_PAD.encode(&raw_path) != *path {
            return Err(bad("the path must be whole 16-byte hashes"));
        }
        let path = raw_path
            .chunks_exact(16)
            .map(|c| {
                let mut h = [0u8; 16];
                h.copy_from_slice(c);
                h
            })
            .collect::<Vec<_>>();
        if path.len() != path_len(index as usize, count as usize) {
            return Err(bad(
                "the path length does not match the leaf's place in the tree",
            ));
        }
        let raw_sig = URL_SAFE_NO_PAD
            .decode(sig_text)
            .map_err(|_| bad("the signature is not unpadded base64url"))?;
        let signature: [u8; 64] = raw_sig
            .as_slice()
            .try_into()
            .map_err(|_| bad("the signature must be 64 bytes"))?;
        if URL_SAFE_NO_PAD.encode(signature) != *sig_text {
            return Err(bad("the signature is not in canonical base64url"));
        }
        Ok(SigField {
            key: key_id,
            index,
            count,
            path,
            signature,
        })
    }
}

const SIG_MEMBER: &[u8] = b",\"sig\":\"";

/// Finds the `sig` member at the end of a file: returns the unsigned bytes and the field's
/// text, or `None` when the file does not end with one. The member must be the last one of the
/// top-level object, written exactly as `,"sig":"…"` right before the closing brace (trailing
/// whitespace after the brace is kept as it was).
pub fn split(bytes: &[u8]) -> Option<(Vec<u8>, &str)> {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|i| i + 1)?;
    if bytes[end - 1] != b'}' || end < 2 || bytes[end - 2] != b'"' {
        return None;
    }
    let body = &bytes[..end - 2];
    let start = body
        .windows(SIG_MEMBER.len())
        .rposition(|w| w == SIG_MEMBER)?;
    let value = &body[start + SIG_MEMBER.len()..];
    if value.iter().any(|b| matches!(b, b'"' | b'\\')) {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut unsigned = Vec::with_capacity(start + bytes.len() - (end - 1));
    unsigned.extend_from_slice(&bytes[..start]);
    unsigned.extend_from_slice(&bytes[end - 1..]);
    Some((unsigned, text))
}

/// Adds the `sig` member to an unsigned file, right before its closing brace.
pub fn attach(unsigned: &[u8], field: &SigField) -> Vec<u8> {
    let Some(brace) = unsigned.iter().rposition(|b| *b == b'}') else {
        return unsigned.to_vec();
    };
    let text = field.to_text();
    let mut out = Vec::with_capacity(unsigned.len() + text.len() + SIG_MEMBER.len() + 1);
    out.extend_from_slice(&unsigned[..brace]);
    out.extend_from_slice(SIG_MEMBER);
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    out.extend_from_slice(&unsigned[brace..]);
    out
}

/// The leaf of an unsigned file.
pub fn leaf(unsigned: &[u8]) -> TreeHash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(unsigned);
    truncate(h.finalize().into())
}

fn interior(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    truncate(h.finalize().into())
}

fn truncate(full: [u8; 32]) -> TreeHash {
    let mut t = [0u8; 16];
    t.copy_from_slice(&full[..16]);
    t
}

/// Levels are built by pairing neighbours; an odd last node moves up unchanged (the count is
/// signed, so the shape is fixed).
fn path_len(mut index: usize, mut size: usize) -> usize {
    let mut n = 0;
    while size > 1 {
        if (index ^ 1) < size {
            n += 1;
        }
        index >>= 1;
        size = size.div_ceil(2);
    }
    n
}

/// Every level of the tree over `leaves`, from the leaves up to the root.
fn levels(leaves: Vec<TreeHash>) -> Vec<Vec<TreeHash>> {
    let mut out = vec![leaves];
    while out.last().is_some_and(|l| l.len() > 1) {
        let below = out.last().map(Vec::as_slice).unwrap_or_default();
        let up = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => interior(l, r),
                [one] => *one,
                _ => [0; 16],
            })
            .collect();
        out.push(up);
    }
    out
}

fn path_of(levels: &[Vec<TreeHash>], mut index: usize) -> Vec<TreeHash> {
    let mut path = Vec::new();
    for level in &levels[..levels.len().saturating_sub(1)] {
        if let Some(sibling) = level.get(index ^ 1) {
            path.push(*sibling);
        }
        index >>= 1;
    }
    path
}

/// The root a leaf and its path lead to, or `None` when the path has the wrong length.
pub fn root_from_path(leaf: TreeHash, field: &SigField) -> Option<TreeHash> {
    let mut node = leaf;
    let mut index = field.index as usize;
    let mut size = field.count as usize;
    let mut path = field.path.iter();
    while size > 1 {
        if (index ^ 1) < size {
            let sibling = path.next()?;
            node = if index & 1 == 0 {
                interior(&node, sibling)
            } else {
                interior(sibling, &node)
            };
        }
        index >>= 1;
        size = size.div_ceil(2);
    }
    path.next().is_none().then_some(node)
}

/// What is signed for one chunk: the tag, the events' node, the key, the leaf count, the root.
pub fn batch_message(node: &str, key: &KeyId, count: u32, root: &TreeHash) -> Vec<u8> {
    let mut m = Vec::with_capacity(MESSAGE_TAG.len() + node.len() + 1 + 8 + 4 + 16);
    m.extend_from_slice(MESSAGE_TAG);
    m.extend_from_slice(node.as_bytes());
    m.push(0);
    m.extend_from_slice(key);
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(root);
    m
}

/// Signs unsigned files of `node` (all of them this node's own), in chunks of at most
/// [`MAX_BATCH_LEAVES`] under one signature each. Returns each file with its `sig` member and
/// the field's text.
pub fn sign_files(
    signer: &dyn EventSigner,
    node: &str,
    unsigned: &[Vec<u8>],
) -> Result<Vec<(Vec<u8>, String)>, SignatureError> {
    let key = signer.key_id();
    let mut out = Vec::with_capacity(unsigned.len());
    for chunk in unsigned.chunks(MAX_BATCH_LEAVES) {
        let count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let tree = levels(chunk.iter().map(|u| leaf(u)).collect());
        let root = tree
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 16]);
        let signature = signer.sign(&batch_message(node, &key, count, &root))?;
        for (i, file) in chunk.iter().enumerate() {
            let field = SigField {
                key,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                count,
                path: path_of(&tree, i),
                signature,
            };
            out.push((attach(file, &field), field.to_text()));
        }
    }
    Ok(out)
}

/// The key id a signed file names, without checking anything else (to pick the certificates
/// that travel with it).
pub fn key_of(bytes: &[u8]) -> Option<KeyId> {
    let (_, text) = split(bytes)?;
    let key = text.split('.').nth(1)?;
    let mut id = [0u8; 8];
    hex::decode_to_slice(key, &mut id).ok()?;
    Some(id)
}

/// Roots already verified, so the other files of a chunk cost hashes only. Bounded: when full
/// it starts over (a miss costs one signature check, never a wrong answer).
pub struct VerifiedRoots {
    seen: Mutex<HashSet<(KeyId, u32, TreeHash, String)>>,
    cap: usize,
}

impl Default for VerifiedRoots {
    fn default() -> Self {
        VerifiedRoots::with_capacity(16_384)
    }
}

impl VerifiedRoots {
    pub fn with_capacity(cap: usize) -> Self {
        VerifiedRoots {
            seen: Mutex::new(HashSet::new()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(KeyId, u32, TreeHash, String)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks a signed file against its `node`: the `sig` member is present, last and well formed,
/// the path leads to a root, and the root's signature verifies with a known, unrevoked
/// certificate naming `node`. `sig_value` is the parsed event's top-level `sig` (the member
/// [`split`] finds must be that one, not text inside another value).
pub fn verify(
    bytes: &[u8],
    node: &str,
    sig_value: Option<&str>,
    directory: &dyn SignerDirectory,
    roots: &VerifiedRoots,
) -> Result<SigField, SignatureError> {
    let Some(sig_value) = sig_value else {
        return Err(SignatureError::Unsigned);
    };
    let (unsigned, text) = split(bytes).ok_or_else(|| {
        SignatureError::Malformed(
            "`sig` must be the last field, written as ,\"sig\":\"…\" right before the closing brace"
                .into(),
        )
    })?;
    if text != sig_value {
        return Err(SignatureError::Malformed(
            "the `sig` at the end of the file is not the event's top-level `sig`".into(),
        ));
    }
    let field = SigField::parse(text)?;
    let root = root_from_path(leaf(&unsigned), &field)
        .ok_or_else(|| SignatureError::Malformed("the path does not fit the tree".into()))?;
    directory.check_key(&field.key, node)?;
    let cached = (field.key, field.count, root, node.to_owned());
    if roots.lock().contains(&cached) {
        return Ok(field);
    }
    let message = batch_message(node, &field.key, field.count, &root);
    directory.verify_signature(&field.key, &message, &field.signature)?;
    let mut seen = roots.lock();
    if seen.len() >= roots.cap {
        seen.clear();
    }
    seen.insert(cached);
    Ok(field)
}

#[cfg(any(test, feature = "test-keys"))]
pub mod test_keys;

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
