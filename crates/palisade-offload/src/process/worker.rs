//! The worker side: a blocking loop serving a process pool over stdin and stdout.
//!
//! Call [`serve`] from the worker program's `main` (or from the current binary when it is
//! started in a worker mode, e.g. with a `--worker` argument). It needs no async runtime.
//!
//! **stdout is the channel.** Anything else the worker prints to stdout corrupts the
//! frames; log to stderr (which the pool passes through by default).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::protocol::{TAG_ERR, TAG_OK};

/// Serves jobs until the pool closes the worker's stdin: reads each request frame, calls
/// `handler`, writes its answer. A handler error, or a panic (caught), goes back to the
/// pool as [`WorkerFailed`](super::WorkerFailed); the worker keeps serving.
///
/// # Errors
///
/// An I/O error on stdin or stdout (the pool went away mid-frame).
pub fn serve<F>(mut handler: F) -> io::Result<()>
where
    F: FnMut(Vec<u8>) -> Result<Vec<u8>, String>,
{
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut input = BufReader::new(stdin.lock());
    let mut output = BufWriter::new(stdout.lock());
    while let Some(request) = read_frame(&mut input)? {
        let (tag, body) = match catch_unwind(AssertUnwindSafe(|| handler(request))) {
            Ok(Ok(body)) => (TAG_OK, body),
            Ok(Err(message)) => (TAG_ERR, message.into_bytes()),
            Err(payload) => {
                let panicked = crate::Panicked::from_payload(payload.as_ref());
                (TAG_ERR, panicked.to_string().into_bytes())
            }
        };
        write_frame(&mut output, tag, &body)?;
    }
    Ok(())
}

/// [`serve`] with JSON requests and answers (feature `serde`); the pool side encodes and
/// decodes with [`to_payload`](super::to_payload) and [`from_payload`](super::from_payload).
///
/// # Errors
///
/// As [`serve`]. A request that does not decode is answered with an error.
#[cfg(feature = "serde")]
pub fn serve_json<Req, Resp, F>(mut handler: F) -> io::Result<()>
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
    F: FnMut(Req) -> Result<Resp, String>,
{
    serve(|bytes| {
        let req = serde_json::from_slice(&bytes).map_err(|e| format!("bad request: {e}"))?;
        let resp = handler(req)?;
        serde_json::to_vec(&resp).map_err(|e| format!("unencodable answer: {e}"))
    })
}

/// Reads one length-delimited frame (4-byte big-endian length, as tokio-util's
/// `LengthDelimitedCodec` writes it); `None` at a clean end of input.
fn read_frame(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut frame)?;
    Ok(Some(frame))
}

fn write_frame(output: &mut impl Write, tag: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "answer over 4 GiB"))?;
    output.write_all(&len.to_be_bytes())?;
    output.write_all(&[tag])?;
    output.write_all(body)?;
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, TAG_OK, b"abc").unwrap();
        assert_eq!(buf, [0, 0, 0, 4, TAG_OK, b'a', b'b', b'c']);
        let mut input = &buf[..];
        assert_eq!(
            read_frame(&mut input).unwrap().unwrap(),
            [TAG_OK, b'a', b'b', b'c']
        );
        assert_eq!(read_frame(&mut input).unwrap(), None);
    }
}
