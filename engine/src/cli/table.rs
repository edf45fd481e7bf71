//! Docker's tables: columns padded to their widest cell, three spaces apart.

/// Prints rows as aligned columns, the first row being the header.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    wrun::out!("{}", render_table(rows));
}

/// Columns padded to their widest cell, three spaces apart, a line per row.
pub fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == N {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        text.push_str(line.join("   ").trim_end());
        text.push('\n');
    }
    text
}
