//! The frames between pool and worker: a request is its bytes; an answer is a tag byte
//! ([`TAG_OK`] or [`TAG_ERR`]) then the answer's bytes or the error's message.

pub(crate) const TAG_OK: u8 = 0;
pub(crate) const TAG_ERR: u8 = 1;

/// Encodes `value` as JSON for a process pool request (feature `serde`).
///
/// # Errors
///
/// When `value` cannot be encoded.
#[cfg(feature = "serde")]
pub fn to_payload<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, palisade_core::BoxError> {
    Ok(serde_json::to_vec(value)?.into())
}

/// Decodes a process pool answer from JSON (feature `serde`).
///
/// # Errors
///
/// When the bytes are not JSON of `T`.
#[cfg(feature = "serde")]
pub fn from_payload<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, palisade_core::BoxError> {
    Ok(serde_json::from_slice(bytes)?)
}
