//! `${name}` substitution in pipeline values (`$${` writes a literal `${`).

/// Replaces each `${name}` in `text` with `lookup(name)`; `Err(name)` for the first name it does
/// not know. Names were checked when the file was loaded, so an error here is a caller's bug or a
/// variable with no value in this context (`${run}` outside a run).
pub fn interpolate<'a>(text: &'a str, lookup: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| after.to_string())?;
        let name = &after[..end];
        out.push_str(lookup(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    #[test]
    fn substitutes_and_escapes() {
        let vars = |n: &str| match n {
            "image" => Some("reg/app"),
            "version" => Some("1.4.2"),
            _ => None,
        };
        assert_eq!(interpolate("${image}:${version}", vars).unwrap(), "reg/app:1.4.2");
        assert_eq!(interpolate("cost $${literal} ${version}", vars).unwrap(), "cost ${literal} 1.4.2");
        assert_eq!(interpolate("${run}", vars).unwrap_err(), "run");
        assert_eq!(interpolate("plain", vars).unwrap(), "plain");
    }
}
