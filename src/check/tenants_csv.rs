//! The `--tenants` CSV: `tenant_id,region` with a header line.

use std::collections::HashMap;
use std::path::Path;

/// Reads the CSV; errors name the file and line.
pub(super) fn load(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tenants CSV {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("tenants CSV {}: {e}", path.display()))
}

fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err("empty file; expected a header `tenant_id,region`".into());
    };
    let h = fields(header);
    if h.len() != 2 {
        return Err(format!(
            "line 1: header must have two columns (tenant_id,region), found {}",
            h.len()
        ));
    }
    for (i, line) in lines {
        let f = fields(line);
        if f.len() != 2 || f[0].is_empty() || f[1].is_empty() {
            return Err(format!(
                "line {}: expected two non-empty fields tenant_id,region",
                i + 1
            ));
        }
        map.insert(f[0].clone(), f[1].clone());
    }
    Ok(map)
}

/// Splits one CSV line (RFC 4180 quotes, no embedded newlines).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_and_quotes_parses_and_bad_rows_name_their_line() {
        let m = parse("tenant_id,region\n1,eu\n\"a,b\",us\n").unwrap();
        assert_eq!(m["1"], "eu");
        assert_eq!(m["a,b"], "us");
        let e = parse("tenant_id,region\n1,eu\n2\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(parse("").is_err());
    }
}
