//! Container logs, in Docker's json-file format: one JSON object per line with the stream,
//! the time and the text. The file is capped: past [`MAX_LOG_BYTES`] it is rotated once.

use crate::sandbox::supervise::{OutputSink, Stream};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Size at which the log is rotated (one older file is kept).
pub const MAX_LOG_BYTES: u64 = 10 << 20;
/// A line longer than this is written in pieces, as Docker does.
const MAX_LINE: usize = 16 << 10;

/// One record of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub stream: String,
    pub time: String,
    pub log: String,
}

/// Writes what a container prints, line by line, into its capped log.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    written: u64,
    partial: [Vec<u8>; 2],
    /// Also copy the output to wrun's own stdout/stderr (an attached, named run).
    tee: bool,
}

impl LogWriter {
    pub fn open(path: &Path, tee: bool) -> std::io::Result<LogWriter> {
        let file = File::options().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            written,
            partial: [Vec::new(), Vec::new()],
            tee,
        })
    }

    /// The log at `path` with the unterminated lines another process had read into it.
    pub fn resume(path: &Path, partial: [Vec<u8>; 2]) -> std::io::Result<LogWriter> {
        Ok(LogWriter {
            partial,
            ..LogWriter::open(path, false)?
        })
    }

    /// What it holds of unterminated lines, stdout's then stderr's.
    pub fn partial(&self) -> &[Vec<u8>; 2] {
        &self.partial
    }

    fn record(&mut self, stream: Stream, line: &[u8]) {
        let record = Record {
            stream: stream.name().to_string(),
            time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            log: String::from_utf8_lossy(line).into_owned(),
        };
        let Ok(mut json) = serde_json::to_vec(&record) else {
            return;
        };
        json.push(b'\n');
        if self.written + json.len() as u64 > MAX_LOG_BYTES {
            self.rotate();
        }
        if self.file.write_all(&json).is_ok() {
            self.written += json.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let old = rotated(&self.path);
        let _ = std::fs::rename(&self.path, &old);
        if let Ok(file) = File::options().create(true).append(true).open(&self.path) {
            self.file = file;
            self.written = 0;
        }
    }

    /// Writes out what is left of unterminated lines.
    pub fn flush(&mut self) {
        for (index, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[index]);
            if !rest.is_empty() {
                self.record(stream, &rest);
            }
        }
    }
}

impl OutputSink for LogWriter {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        if self.tee {
            let _ = match stream {
                Stream::Stdout => std::io::stdout().write_all(data),
                Stream::Stderr => std::io::stderr().write_all(data),
            };
        }
        let index = usize::from(stream == Stream::Stderr);
        let mut pending = std::mem::take(&mut self.partial[index]);
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(newline) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline + 1;
            self.record(stream, &pending[start..end]);
            start = end;
        }
        while pending.len() - start > MAX_LINE {
            self.record(stream, &pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        pending.drain(..start);
        self.partial[index] = pending;
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The records of a log (the rotated file first), skipping lines that do not parse.
pub fn read(path: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    for file in [rotated(path), path.to_path_buf()] {
        let Ok(file) = File::open(&file) else {
            continue;
        };
        records.extend(
            BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| serde_json::from_str(&line).ok()),
        );
    }
    records
}

/// Follows a log from byte `offset` of the current file: new complete records and the next
/// offset (rotation restarts at 0).
pub fn read_from(path: &Path, offset: u64) -> (Vec<Record>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return (Vec::new(), offset);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if len < offset { 0 } else { offset };
    if file.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), start);
    }
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let records = text[..complete]
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    (records, start + complete as u64)
}

/// Prints records to wrun's stdout or stderr, as the container wrote them; with
/// `timestamps`, each line after its time (RFC 3339, nanoseconds), as `docker logs -t`.
pub fn print(records: &[Record], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for record in records {
        let sink: &mut dyn Write = if record.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            let _ = write!(sink, "{} ", record.time);
        }
        let _ = sink.write_all(record.log.as_bytes());
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detached container's log in a directory of its own.
    fn new_log() -> (tempfile::TempDir, std::path::PathBuf, LogWriter) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let writer = LogWriter::open(&path, false).unwrap();
        (dir, path, writer)
    }

    #[test]
    fn lines_become_records_per_stream() {
        let (_dir, path, mut writer) = new_log();
        writer.output(Stream::Stdout, b"hel");
        writer.output(Stream::Stderr, b"oops\n");
        writer.output(Stream::Stdout, b"lo\nwor");
        writer.flush();
        let records = read(&path);
        let texts: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.stream.as_str(), r.log.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("stderr", "oops\n"),
                ("stdout", "hello\n"),
                ("stdout", "wor")
            ]
        );
    }

    #[test]
    fn the_log_is_capped_by_rotation() {
        let (_dir, path, mut writer) = new_log();
        let line = vec![b'x'; 1000];
        for _ in 0..25_000 {
            writer.output(Stream::Stdout, &line);
            writer.output(Stream::Stdout, b"\n");
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(
            size <= MAX_LOG_BYTES && old <= MAX_LOG_BYTES,
            "{size} {old}"
        );
    }

    #[test]
    fn following_reads_only_new_complete_records() {
        let (_dir, path, mut writer) = new_log();
        writer.output(Stream::Stdout, b"one\n");
        let (first, offset) = read_from(&path, 0);
        assert_eq!(first.len(), 1);
        writer.output(Stream::Stdout, b"two\n");
        let (second, _) = read_from(&path, offset);
        assert_eq!(second[0].log, "two\n");
    }
}
