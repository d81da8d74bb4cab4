//! Paths into YAML documents as users write them: `spec.template.spec.containers[0].image`.

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Splits `a.b[0].c` into its steps, or says what is wrong with it.
pub fn parse(path: &str) -> Result<Vec<Segment>, &'static str> {
    if path.is_empty() {
        return Err("it is empty");
    }
    let mut out = Vec::new();
    for part in path.split('.') {
        let key_end = part.find('[').unwrap_or(part.len());
        if key_end == 0 && (out.is_empty() || !part.starts_with('[')) || part.is_empty() {
            return Err("it has an empty key");
        }
        if key_end > 0 {
            out.push(Segment::Key(part[..key_end].to_string()));
        }
        let mut rest = &part[key_end..];
        while !rest.is_empty() {
            let close = rest.find(']').ok_or("a `[` is not closed")?;
            let index = rest[1..close].parse::<usize>().map_err(|_| "a list index is not a number in brackets");
            if !rest.starts_with('[') {
                return Err("a list index is not a number in brackets");
            }
            out.push(Segment::Index(index?));
            rest = &rest[close + 1..];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_indexes() {
        use Segment::*;
        assert_eq!(parse("image.tag").unwrap(), vec![Key("image".into()), Key("tag".into())]);
        assert_eq!(parse("spec.containers[0].image").unwrap(), vec![Key("spec".into()), Key("containers".into()), Index(0), Key("image".into())]);
        assert_eq!(parse("a[1][2]").unwrap(), vec![Key("a".into()), Index(1), Index(2)]);
        for bad in ["", "a..b", "a[x]", "a[0", ".a", "a.", "a]0["] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
