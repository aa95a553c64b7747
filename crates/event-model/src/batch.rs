//! A batch file being built: JSON lines, gzipped as they come, with what a pointer
//! and the flush policy need to know about it.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Lines are compressed in chunks of this size: one deflate call per chunk, not per line.
const CHUNK: usize = 64 * 1024;

/// A gzip member of JSON lines under construction.
pub struct BatchFile {
    encoder: GzEncoder<Vec<u8>>,
    pending: Vec<u8>,
    lines: u64,
    uncompressed: u64,
}

impl BatchFile {
    pub fn new(level: u32) -> Self {
        Self {
            encoder: GzEncoder::new(Vec::new(), Compression::new(level)),
            pending: Vec::with_capacity(CHUNK),
            lines: 0,
            uncompressed: 0,
        }
    }

    /// The buffer to append one line to; call [`BatchFile::line_written`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Counts the line just appended to [`BatchFile::buffer`], compressing a full chunk.
    pub fn line_written(&mut self) {
        self.lines += 1;
        if self.pending.len() >= CHUNK {
            self.compress_pending();
        }
    }

    fn compress_pending(&mut self) {
        self.uncompressed += self.pending.len() as u64;
        // Deflate into memory fails only on a broken stream state, which nothing outside can cause.
        self.encoder
            .write_all(&self.pending)
            .expect("compressing into a Vec cannot fail");
        self.pending.clear();
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Bytes of JSON lines so far, compressed or not.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.uncompressed + self.pending.len() as u64
    }

    /// The finished gzip bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.compress_pending();
        self.encoder.finish().expect("compressing into a Vec cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn lines_come_back_after_gunzip() {
        let mut file = BatchFile::new(1);
        for i in 0..10_000 {
            file.buffer().extend_from_slice(format!("{{\"n\":{i}}}\n").as_bytes());
            file.line_written();
        }
        assert_eq!(file.lines(), 10_000);
        let expected_bytes = file.uncompressed_bytes();
        let gz = file.finish();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        assert_eq!(text.len() as u64, expected_bytes);
        assert_eq!(text.lines().nth(9_999), Some("{\"n\":9999}"));
    }
}
