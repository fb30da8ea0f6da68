//! `{{name}}` placeholders, used in rule selectors (analysis parameters) and hook arguments
//! (deployment facts).
//!
//! Substitution is a single pass over the template: a value that itself contains `{{x}}` is
//! inserted literally and never expanded again, so data cannot smuggle in new placeholders.

/// A placeholder with no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    /// Byte offset of the `{{` in the template.
    pub offset: usize,
}

/// Replaces every `{{ name }}` using `lookup`. Unclosed `{{` is kept as text.
pub fn render(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Unknown> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut base = 0;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(Unknown {
                    name: name.to_string(),
                    offset: base + start,
                });
            }
        }
        let consumed = start + 2 + len + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The placeholder names a template uses, in order of appearance.
pub fn placeholders(template: &str) -> Vec<(String, usize)> {
    let mut v = Vec::new();
    let mut rest = template;
    let mut base = 0;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        v.push((
            rest[start + 2..start + 2 + len].trim().to_string(),
            base + start,
        ));
        let consumed = start + 2 + len + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_pass() {
        let r = render("a{{x}}b{{ y }}", |n| {
            Some(if n == "x" { "{{y}}".into() } else { "Y".into() })
        });
        assert_eq!(r.unwrap(), "a{{y}}bY");
        assert_eq!(
            render("{{nope}}", |_| None).unwrap_err(),
            Unknown {
                name: "nope".into(),
                offset: 0
            }
        );
        assert_eq!(render("x{{open", |_| None).unwrap(), "x{{open");
        assert_eq!(
            placeholders("{{a}}-{{b}}"),
            vec![("a".into(), 0), ("b".into(), 6)]
        );
    }
}
