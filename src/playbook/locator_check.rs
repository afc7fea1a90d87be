//! Load-time locator check: the browser's own parser, so that there is one locator
//! grammar. CSS inside a part is checked by the page itself when the step runs.

use crate::browser::Locator;

pub use crate::browser::ARIA_ROLES;

/// Check a locator's syntax. `Err` carries a human message (no position).
pub fn validate_locator(locator: &str) -> Result<(), String> {
    if locator.trim().is_empty() {
        return Err("empty locator".into());
    }
    match Locator::parse(locator) {
        Ok(_) => Ok(()),
        Err(e) => {
            let mut msg = e.message;
            if let Some(role) = msg
                .strip_prefix("unknown ARIA role `")
                .and_then(|r| r.strip_suffix('`'))
            {
                msg.push_str(&super::suggest::hint(role, ARIA_ROLES));
            }
            Err(format!("{msg} (at byte {})", e.offset))
        }
    }
}

/// Whether a (valid) locator starts with `row`, the current row of `for_each`.
pub(super) fn starts_with_row(locator: &str) -> bool {
    Locator::parse(locator).is_ok_and(|l| l.starts_with_row())
}

#[cfg(test)]
mod tests {
    use super::validate_locator as v;

    #[test]
    fn accepts_the_supported_syntax() {
        for ok in [
            "#password",
            "label=Email",
            "text=Verify",
            "text='Sign in'",
            "role=button[name='Sign in']",
            "role=heading[level=1][name=\"Users\" exact]",
            "xpath=//tr[td[text()='x']]",
            "tr:has-text('a@b.c') >> text=Edit",
            "table#users tbody tr",
            "h1:has-text('Users')",
            "li >> nth=-1",
            "input[name='q']",
            "css=div > span",
            "div:nth-child(2n+1)",
            "button:not(:disabled)",
            "button:visible",
        ] {
            assert_eq!(v(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_locators() {
        for (bad, needle) in [
            ("", "empty locator"),
            ("  ", "empty locator"),
            ("div[name='x'", "unclosed `[`"),
            ("text='abc", "unterminated quote"),
            ("a >> ", "empty locator part"),
            (">> a", "empty locator part"),
            ("role=buton[name='x']", "did you mean `button`"),
            ("role=button[nam='x']", "unsupported role attribute"),
            ("role=", "needs a role name"),
            ("nth=first", "integer"),
            ("foo=bar", "unknown selector engine 'foo'"),
            ("h1:has-text(Users)", "quoted string"),
            ("div)", "unmatched `)`"),
            ("label=", "empty value"),
            (
                "tr:has-text('x') >> button[name=del], tr:has-text('x') >> a[href*=del]",
                "a comma never separates ` >> ` chains",
            ),
            ("table >> row", "can only start a locator"),
        ] {
            match v(bad) {
                Ok(()) => panic!("`{bad}` accepted"),
                Err(e) => assert!(e.contains(needle), "`{bad}`: {e}"),
            }
        }
    }
}
