//! Offline inputs for `moat scan`: a file (gzip undone, whatever its name), standard input,
//! or a stream's past; read through a buffer aligned for the kernel's copy.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use super::{stream, SourceSpec};

/// Where an offline scan reads from.
#[derive(Clone)]
pub enum Input {
    Stdin,
    File(PathBuf),
    /// A stream source (the journal, containers): what it holds now, as far back as it goes.
    Stream {
        source: String,
        stream: Arc<dyn stream::Stream>,
    },
}

impl PartialEq for Input {
    fn eq(&self, other: &Input) -> bool {
        match (self, other) {
            (Input::Stdin, Input::Stdin) => true,
            (Input::File(a), Input::File(b)) => a == b,
            (Input::Stream { source: a, .. }, Input::Stream { source: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Input {
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    /// A configured source as an input.
    pub fn from_source(source: &str) -> Result<Input, String> {
        Ok(match SourceSpec::parse(source)? {
            SourceSpec::Stdin => Input::Stdin,
            SourceSpec::Path(p) => Input::File(PathBuf::from(p)),
            SourceSpec::Stream(s) => Input::Stream {
                source: source.to_string(),
                stream: Arc::from(s),
            },
        })
    }

    pub fn display(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".into(),
            Input::File(p) => p.display().to_string(),
            Input::Stream { source, .. } => source.clone(),
        }
    }
}

/// An opened input: a reader that already undoes gzip when the file is compressed, and the
/// size on disk (for progress) when known.
pub struct Opened {
    pub reader: Box<dyn BufRead>,
    pub size: Option<u64>,
    pub modified: Option<std::time::SystemTime>,
    /// Bytes read from the file so far (before decompression), for progress.
    pub consumed: Arc<AtomicU64>,
}

/// Read-buffer size: big enough that the per-refill cost disappears, small enough for the
/// memory budget, and below [`MAX_LINE`] so a block of lines never holds an overlong one.
const BUF: usize = 256 * 1024;

/// A buffered reader whose buffer starts on a 64-byte boundary.
///
/// `std::io::BufReader` cannot be given its buffer, and the allocator hands out large blocks
/// 16 bytes past a page boundary; the kernel's copy into such a destination runs at a third
/// of its speed. Measured on a 179 MB access log in the page cache: 75 ms of `read` time with
/// `BufReader`, 21 ms with this. For a scan that is otherwise a memchr and a memmem over the
/// bytes, that is most of the cost.
pub struct AlignedReader<R> {
    inner: R,
    storage: Vec<u8>,
    start: usize,
    pos: usize,
    filled: usize,
}

impl<R: Read> AlignedReader<R> {
    pub fn new(inner: R) -> Self {
        const ALIGN: usize = 64;
        let storage = vec![0u8; BUF + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedReader {
            inner,
            storage,
            start,
            pos: 0,
            filled: 0,
        }
    }
}

impl<R: Read> Read for AlignedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for AlignedReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            let buf = &mut self.storage[self.start..self.start + BUF];
            self.filled = self.inner.read(buf)?;
            self.pos = 0;
        }
        Ok(&self.storage[self.start + self.pos..self.start + self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

/// Opens `input`; a file that starts with the gzip magic is decompressed (rotated
/// `access.log.2.gz`), whatever its name.
pub fn open(input: &Input) -> io::Result<Opened> {
    match input {
        Input::Stdin => Ok(Opened {
            reader: Box::new(AlignedReader::new(io::stdin())),
            size: None,
            modified: None,
            consumed: Arc::default(),
        }),
        Input::File(path) => open_file(path),
        Input::Stream { stream, .. } => Ok(Opened::stream(stream.read_all()?)),
    }
}

impl Opened {
    fn stream(lines: ProducedLines) -> Opened {
        Opened {
            reader: Box::new(io::BufReader::with_capacity(BUF, lines)),
            size: None,
            modified: None,
            consumed: Arc::default(),
        }
    }
}

/// Lines another thread produces (from a program's output or an API), read as a stream.
pub struct ProducedLines {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    block: Vec<u8>,
    at: usize,
}

impl ProducedLines {
    /// Runs `produce` on its own thread; it hands over blocks of complete lines with `send`
    /// (false: the reader is gone, stop), and its error ends the stream with that error.
    pub fn spawn(
        produce: impl FnOnce(&mut dyn FnMut(Vec<u8>) -> bool) -> io::Result<()> + Send + 'static,
    ) -> ProducedLines {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        std::thread::spawn(move || {
            let mut send = |block: Vec<u8>| tx.send(Ok(block)).is_ok();
            if let Err(e) = produce(&mut send) {
                let _ = tx.send(Err(e));
            }
        });
        ProducedLines {
            rx,
            block: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ProducedLines {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            match self.rx.recv() {
                Ok(Ok(block)) => {
                    self.block = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn open_file(path: &Path) -> io::Result<Opened> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory",
        ));
    }
    let consumed = Arc::<AtomicU64>::default();
    let counted = Counted {
        inner: file,
        count: consumed.clone(),
    };
    let mut reader = AlignedReader::new(counted);
    let gz = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead> = if gz {
        Box::new(AlignedReader::new(MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    };
    Ok(Opened {
        reader,
        size: Some(meta.len()),
        modified: meta.modified().ok(),
        consumed,
    })
}

/// Counts bytes pulled through a reader, for a progress bar that is right for compressed input.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_reader_reads_everything_in_order() {
        let data: Vec<u8> = (0..(3 * BUF + 17)).map(|i| (i % 251) as u8).collect();
        let mut r = AlignedReader::new(&data[..]);
        assert_eq!(r.fill_buf().unwrap().as_ptr() as usize % 64, 0);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
