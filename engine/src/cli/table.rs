//! Docker's tables: cells cut by tabs and aligned as Go's tabwriter does in Docker's CLI
//! (columns at least ten wide, three spaces apart).

use std::io::Write;

/// Prints rows as aligned columns, the first row being the header.
pub fn print_table<R: AsRef<[String]>>(rows: &[R]) {
    wrun::out!("{}", render_table(rows));
}

/// Rows as aligned columns, a line per row.
fn render_table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let text: String = rows
        .iter()
        .map(|row| row.as_ref().join("\t") + "\n")
        .collect();
    align(&text)
}

/// Lines whose cells are cut by tabs, aligned; the text after a line's last tab is not padded.
pub fn align(text: &str) -> String {
    // Go's minimum width counts the padding, this crate's does not: 7 + 3 is Docker's 10.
    let mut writer = tabwriter::TabWriter::new(Vec::new()).minwidth(7).padding(3);
    // Writing to memory cannot fail.
    let _ = writer
        .write_all(text.as_bytes())
        .and_then(|()| writer.flush());
    let aligned = String::from_utf8_lossy(&writer.into_inner().unwrap_or_default()).into_owned();
    aligned
        .lines()
        .map(|l| l.trim_end().to_string() + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_as_docker_prints_them() {
        let rows = [
            ["CONTAINER ID".to_string(), "IMAGE".into(), "NAMES".into()],
            ["0123456789ab".to_string(), "busybox".into(), "web-1".into()],
        ];
        assert_eq!(
            render_table(&rows),
            "CONTAINER ID   IMAGE     NAMES\n0123456789ab   busybox   web-1\n"
        );
    }
}
