//! Coverage totals from Cobertura XML (coverage.py, tarpaulin, ...) or lcov.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Line coverage as a percentage, from either format.
pub fn parse(text: &str) -> Option<f64> {
    if text.trim_start().starts_with('<') {
        cobertura(text)
    } else {
        lcov(text)
    }
}

fn cobertura(xml: &str) -> Option<f64> {
    let mut r = Reader::from_str(xml);
    loop {
        match r.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"coverage" => {
                let rate = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"line-rate")?
                    .unescape_value()
                    .ok()?
                    .parse::<f64>()
                    .ok()
                    // A rate is a share: NaN, 1e308 or -1 say nothing.
                    .filter(|r| (0.0..=1.0).contains(r))?;
                return Some(rate * 100.0);
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn lcov(text: &str) -> Option<f64> {
    let (mut found, mut hit) = (0u64, 0u64);
    let mut any = false;
    for line in text.lines() {
        // Totals past u64 are not a real file's: no coverage rather than a
        // wrapped (or, in a debug build, panicking) sum.
        if let Some(n) = line.strip_prefix("LF:") {
            found = found.checked_add(n.trim().parse::<u64>().ok()?)?;
            any = true;
        } else if let Some(n) = line.strip_prefix("LH:") {
            hit = hit.checked_add(n.trim().parse::<u64>().ok()?)?;
        }
    }
    // More lines hit than found is a broken file: at most all of them.
    match (any, found) {
        (false, _) => None,
        (true, 0) => Some(100.0),
        (true, f) => Some(hit.min(f) as f64 / f as f64 * 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cobertura_line_rate() {
        let xml = r#"<?xml version="1.0" ?><coverage version="7.4" timestamp="1" lines-valid="100" lines-covered="96" line-rate="0.962" branch-rate="0"><packages/></coverage>"#;
        assert!((parse(xml).unwrap() - 96.2).abs() < 1e-9);
    }

    #[test]
    fn lcov_totals() {
        let lcov = "SF:a.rs\nLF:10\nLH:9\nend_of_record\nSF:b.rs\nLF:10\nLH:5\nend_of_record\n";
        assert_eq!(parse(lcov), Some(70.0));
        assert_eq!(parse("garbage"), None);
    }
}
