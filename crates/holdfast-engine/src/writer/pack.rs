//! The restic repository format's byte layouts, for writing: encrypted blobs, pack files with
//! their encrypted headers, and encrypted (compressed) JSON files. The JSON types are
//! rustic_core's; the layouts follow restic's design document ("Repository Format").

use std::num::NonZeroU32;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::AeadInPlace;
use rustic_core::Id;
use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{BlobType, IndexBlob, IndexPack, MasterKey, PackId};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A blob or file id: SHA-256 of the plaintext (blobs) or of the stored bytes (files).
pub type RawId = [u8; 32];

pub fn sha256(data: &[u8]) -> RawId {
    Sha256::digest(data).into()
}

/// restic's encryption: AES-256-CTR with a random 16-byte IV, then Poly1305-AES over the
/// ciphertext; stored as IV ‖ ciphertext ‖ MAC. Keys come from the repository's master key.
pub struct Crypto {
    cipher: Aes256CtrPoly1305Aes,
}

impl Crypto {
    pub fn new(key: &MasterKey) -> Self {
        // The layout rustic_core uses: AES key, then Poly1305's k, then its r.
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&key.encrypt);
        raw[32..48].copy_from_slice(&key.mac.k);
        raw[48..].copy_from_slice(&key.mac.r);
        let cipher = Aes256CtrPoly1305Aes::new((&raw).into());
        raw.fill(0);
        Self { cipher }
    }

    /// Appends `plain`, encrypted, to `out`.
    pub fn seal_into(&self, out: &mut Vec<u8>, plain: &[u8]) -> Result<()> {
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv).map_err(|e| Error::writer("drawing an IV", e.to_string()))?;
        let start = out.len();
        out.reserve(plain.len() + 32);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached((&iv).into(), &[], &mut out[start + 16..])
            .map_err(|e| Error::writer("encrypting", e.to_string()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + 32);
        self.seal_into(&mut out, plain)?;
        Ok(out)
    }

    /// Checks the MAC and decrypts (for the extra verification before upload).
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() < 32 {
            return Err(Error::writer("decrypting", "encrypted data is too short"));
        }
        let (iv, rest) = data.split_at(16);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let mut out = ct.to_vec();
        self.cipher
            .decrypt_in_place_detached(iv.into(), &[], &mut out, tag.into())
            .map_err(|_| Error::writer("decrypting", "the MAC check failed"))?;
        Ok(out)
    }
}

/// A blob ready for a pack: encrypted (and compressed, when `uncompressed` is set).
pub struct SealedBlob {
    pub id: RawId,
    pub tpe: BlobType,
    pub data: Vec<u8>,
    /// The plaintext length, for a compressed blob.
    pub uncompressed: Option<NonZeroU32>,
}

/// Compresses (with `level`, if any) and encrypts one blob; with `verify`, decrypts and
/// decompresses the result again and compares it with the input, as rustic_core's
/// `extra_verify` does.
pub fn seal_blob(
    crypto: &Crypto,
    zstd: Option<&mut zstd::bulk::Compressor<'_>>,
    id: RawId,
    tpe: BlobType,
    plain: &[u8],
    verify: bool,
) -> Result<SealedBlob> {
    let (data, uncompressed) = match zstd {
        Some(z) => {
            let c = z
                .compress(plain)
                .map_err(|e| Error::writer("compressing", e))?;
            let len = u32::try_from(plain.len())
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    Error::writer("sealing a blob", "a blob must be 1 byte to 4 GiB long")
                })?;
            (crypto.seal(&c)?, Some(len))
        }
        None => (crypto.seal(plain)?, None),
    };
    if verify {
        let back = crypto.open(&data)?;
        let back = match uncompressed {
            Some(len) => zstd::bulk::decompress(&back, len.get() as usize)
                .map_err(|e| Error::writer("decompressing for verification", e))?,
            None => back,
        };
        if back != plain {
            return Err(Error::writer(
                "verifying a blob",
                "it did not decrypt and decompress to its data (memory or CPU fault?)",
            ));
        }
    }
    Ok(SealedBlob {
        id,
        tpe,
        data,
        uncompressed,
    })
}

/// Where a blob went in a pack.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub id: RawId,
    pub tpe: BlobType,
    pub offset: u32,
    pub length: u32,
    pub uncompressed: Option<NonZeroU32>,
}

/// A pack file being filled.
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

/// A finished pack file.
pub struct Pack {
    pub id: RawId,
    pub bytes: Vec<u8>,
    pub blobs: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            blobs: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn add(&mut self, b: SealedBlob) {
        self.blobs.push(BlobEntry {
            id: b.id,
            tpe: b.tpe,
            offset: self.buf.len() as u32,
            length: b.data.len() as u32,
            uncompressed: b.uncompressed,
        });
        self.buf.extend_from_slice(&b.data);
    }

    /// Appends the encrypted header and its length; the pack's id is the SHA-256 of it all.
    pub fn finish(mut self, crypto: &Crypto) -> Result<Pack> {
        let mut header = Vec::with_capacity(self.blobs.len() * 41);
        for b in &self.blobs {
            // Header entry types: 0 data, 1 tree, 2 compressed data, 3 compressed tree.
            let tpe = match b.tpe {
                BlobType::Data => 0u8,
                BlobType::Tree => 1,
            } + if b.uncompressed.is_some() { 2 } else { 0 };
            header.push(tpe);
            header.extend_from_slice(&b.length.to_le_bytes());
            if let Some(u) = b.uncompressed {
                header.extend_from_slice(&u.get().to_le_bytes());
            }
            header.extend_from_slice(&b.id);
        }
        let before = self.buf.len();
        crypto.seal_into(&mut self.buf, &header)?;
        let header_len = (self.buf.len() - before) as u32;
        self.buf.extend_from_slice(&header_len.to_le_bytes());
        Ok(Pack {
            id: sha256(&self.buf),
            bytes: self.buf,
            blobs: self.blobs,
        })
    }
}

impl Pack {
    /// The pack as an index file lists it.
    pub fn index_entry(&self) -> IndexPack {
        index_pack(self.id, &self.blobs, self.bytes.len() as u32)
    }
}

/// Builds rustic_core's index entry for a pack. Its blob locations are not constructible from
/// outside rustic_core, so they go through their serde form (restic's index JSON).
pub fn index_pack(id: RawId, blobs: &[BlobEntry], size: u32) -> IndexPack {
    #[derive(serde::Serialize)]
    struct Loc {
        id: Id,
        #[serde(rename = "type")]
        tpe: BlobType,
        offset: u32,
        length: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        uncompressed_length: Option<NonZeroU32>,
    }
    let blobs = blobs
        .iter()
        .map(|b| {
            let loc = Loc {
                id: Id::new(b.id),
                tpe: b.tpe,
                offset: b.offset,
                length: b.length,
                uncompressed_length: b.uncompressed,
            };
            let v = serde_json::to_value(loc).expect("serialisable");
            serde_json::from_value::<IndexBlob>(v).expect("restic's index blob format")
        })
        .collect();
    IndexPack {
        id: PackId::from(Id::new(id)),
        blobs,
        time: Some(Timestamp::now()),
        size: Some(size),
    }
}

/// An encrypted repository file (index, snapshot): JSON, compressed in a version 2
/// repository (a 0x02 byte, then zstd), then encrypted. Returns the id and the bytes.
pub fn seal_file(
    crypto: &Crypto,
    zstd_level: Option<i32>,
    json: &[u8],
) -> Result<(RawId, Vec<u8>)> {
    let data = match zstd_level {
        Some(level) => {
            let mut plain = vec![2u8];
            plain.extend_from_slice(
                &zstd::bulk::compress(json, level).map_err(|e| Error::writer("compressing", e))?,
            );
            crypto.seal(&plain)?
        }
        None => crypto.seal(json)?,
    };
    Ok((sha256(&data), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_open_to_their_data_and_verify() {
        let key = MasterKey::new();
        let c = Crypto::new(&key);
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        let data = b"hello hello hello hello".repeat(100);
        let b = seal_blob(&c, Some(&mut z), sha256(&data), BlobType::Data, &data, true).unwrap();
        assert!(b.data.len() < data.len());
        let plain = zstd::bulk::decompress(&c.open(&b.data).unwrap(), data.len()).unwrap();
        assert_eq!(plain, data);
        let mut tampered = b.data.clone();
        tampered[20] ^= 1;
        assert!(c.open(&tampered).is_err());
    }

    #[test]
    fn index_entries_keep_their_locations() {
        let blobs = vec![BlobEntry {
            id: [7; 32],
            tpe: BlobType::Data,
            offset: 0,
            length: 100,
            uncompressed: NonZeroU32::new(1000),
        }];
        let p = index_pack([1; 32], &blobs, 200);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["blobs"][0]["length"], 100);
        assert_eq!(json["blobs"][0]["uncompressed_length"], 1000);
        assert_eq!(json["blobs"][0]["type"], "data");
    }
}
