//! Finding a key path (`finetune.k`, `include[1].target`) in a sweep's text, for the errors and
//! warnings found after parsing (serde_yaml locates those found while parsing).

/// Drops serde_yaml's own " at line N column M" (we print `file:line:column:` in front).
pub(crate) fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) if message[index..].contains(" column ") => message[..index].to_string(),
        _ => message.to_string(),
    }
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '-']).len()
}

/// Whether `line` (trimmed of indentation and list dashes) starts with `key:` or, in a flow
/// map, holds `key:` after `{` or `,`. Returns the column (0-based) of the key.
fn key_column(line: &str, key: &str) -> Option<usize> {
    let aliases = [key.to_string(), format!("{key}s")];
    for alias in &aliases {
        let pattern = format!("{alias}:");
        let mut search_from = 0;
        while let Some(found) = line[search_from..].find(&pattern) {
            let at = search_from + found;
            let before = line[..at].trim_end();
            if before.is_empty() || before.ends_with(['{', ',', '-']) {
                return Some(at);
            }
            search_from = at + pattern.len();
        }
    }
    None
}

/// 1-based (line, column) of the key path's last key, or of the deepest part found; (1, 1) if
/// none is found.
pub(crate) fn locate_key(text: &str, path: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut best = (1, 1);
    let mut start = 0usize;
    let mut min_indent = 0usize;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let found = lines
            .iter()
            .enumerate()
            .skip(start)
            .find_map(|(number, line)| {
                let code = line.split(" #").next().unwrap_or(line);
                if code.trim_start().starts_with('#') {
                    return None;
                }
                let column = key_column(code, key)?;
                (indentation(code) >= min_indent || column >= min_indent)
                    .then_some((number, column))
            });
        let Some((number, column)) = found else { break };
        best = (number + 1, column + 1);
        start = number;
        min_indent = indentation(lines[number]) + 1;
        if let Some(index) = index {
            // The index-th list item after the key.
            let item = lines
                .iter()
                .enumerate()
                .skip(number + 1)
                .filter(|(_, line)| line.trim_start().starts_with("- "))
                .nth(index);
            if let Some((item_number, line)) = item {
                best = (item_number + 1, line.len() - line.trim_start().len() + 1);
                start = item_number;
                min_indent = line.len() - line.trim_start().len();
            }
        }
    }
    best
}
