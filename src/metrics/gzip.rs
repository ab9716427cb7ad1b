//! A gzip page made of pieces deflated at different times.
//!
//! A [`Piece`] is raw deflate data ending on a sync flush (byte-aligned, not the last block),
//! compressed by a reset compressor, so that it refers to nothing before it: pieces put side by
//! side decode as one deflate stream. The page is the gzip header, the pieces in order, an
//! empty last block and the trailer, whose CRC-32 is combined from the pieces' own (RFC 1952;
//! the way parallel gzip tools join blocks). A piece kept from an earlier scrape is therefore
//! sent as it is, not compressed again.

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};

/// The gzip member header: deflate, no name, no time, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty block of fixed codes marked last: the end of the deflate stream.
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

/// Deflated text that can sit anywhere in a page, and the CRC-32 and length of its text.
#[derive(Debug)]
pub(super) struct Piece {
    data: Bytes,
    crc: Crc,
}

impl Piece {
    /// `text` deflated on its own by `z` (reset first).
    pub(super) fn deflate(z: &mut Compress, text: &[u8]) -> Piece {
        z.reset();
        let mut data = Vec::with_capacity(text.len() / 8 + 64);
        loop {
            let read = usize::try_from(z.total_in()).expect("a piece fits in memory");
            if data.capacity() - data.len() < 64 {
                data.reserve(data.capacity().max(4 * 1024));
            }
            z.compress_vec(&text[read..], &mut data, FlushCompress::Sync)
                .expect("deflating into memory");
            // The flush is complete once all the text is in and output space is left over.
            if z.total_in() as usize == text.len() && data.len() < data.capacity() {
                break;
            }
        }
        // The estimate above is generous (text shrinks about twenty times): kept for a whole
        // poll interval, a piece holds only its bytes.
        data.shrink_to_fit();
        let mut crc = Crc::new();
        crc.update(text);
        Piece {
            data: data.into(),
            crc,
        }
    }

    /// How many bytes it takes.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.data.len()
    }
}

/// A compressor for [`Piece::deflate`], at the page's level.
pub(super) fn compressor(level: Compression) -> Compress {
    Compress::new(level, false)
}

/// A gzip page being put together, in parts that are sent in order.
#[derive(Debug)]
pub(super) struct GzPage {
    parts: Vec<Bytes>,
    crc: Crc,
    z: Compress,
}

impl GzPage {
    /// A page that deflates its own text at `level`.
    pub(super) fn new(level: Compression) -> GzPage {
        GzPage {
            parts: vec![Bytes::from_static(&HEADER)],
            crc: Crc::new(),
            z: compressor(level),
        }
    }

    /// The page's compressor, to deflate pieces kept for later pages with
    /// ([`Piece::deflate`] resets it).
    pub(super) fn compressor(&mut self) -> &mut Compress {
        &mut self.z
    }

    /// Text of this scrape only, deflated now.
    pub(super) fn text(&mut self, text: &[u8]) {
        if !text.is_empty() {
            let piece = Piece::deflate(&mut self.z, text);
            self.piece(&piece);
        }
    }

    /// A piece deflated earlier, shared, not copied.
    pub(super) fn piece(&mut self, piece: &Piece) {
        self.crc.combine(&piece.crc);
        self.parts.push(piece.data.clone());
    }

    /// The parts of the whole gzip member: header, pieces, last block and trailer.
    pub(super) fn finish(mut self) -> Vec<Bytes> {
        let mut end = Vec::with_capacity(LAST_BLOCK.len() + 8);
        end.extend_from_slice(&LAST_BLOCK);
        end.extend_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE: the text's length modulo 2^32, as the format defines it.
        end.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.parts.push(end.into());
        self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(parts: &[Bytes]) -> Vec<u8> {
        let page: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut out = Vec::new();
        // The single-member decoder: the page must be one gzip member, not several.
        flate2::read::GzDecoder::new(page.as_slice())
            .read_to_end(&mut out)
            .expect("a valid gzip stream");
        out
    }

    #[test]
    fn pieces_made_apart_decode_as_one_member_with_the_right_crc() {
        let a: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("a{{i=\"{i}\"}} 1\n").into_bytes())
            .collect();
        let b = b"# HELP b x\n# TYPE b gauge\n".to_vec();
        let c: Vec<u8> = (0..5_000)
            .flat_map(|i| format!("a{{i=\"{i}\"}} 2\n").into_bytes())
            .collect();
        let mut z = compressor(Compression::fast());
        let kept_a = Piece::deflate(&mut z, &a);
        let kept_c = Piece::deflate(&mut z, &c);
        assert!(kept_a.size() < a.len() / 4, "{} bytes", kept_a.size());
        let mut page = GzPage::new(Compression::fast());
        page.text(b"head\n");
        page.piece(&kept_a);
        page.text(&b);
        page.piece(&kept_c);
        page.piece(&kept_a);
        page.text(b"");
        let parts = page.finish();
        let whole = [&b"head\n"[..], &a, &b, &c, &a].concat();
        assert_eq!(gunzip(&parts), whole);
        // The kept piece is the same buffer in the page, not a copy.
        assert!(parts.iter().any(|p| p.as_ptr() == kept_a.data.as_ptr()));
    }

    #[test]
    fn an_empty_page_is_a_valid_empty_member() {
        assert_eq!(gunzip(&GzPage::new(Compression::fast()).finish()), b"");
    }
}
