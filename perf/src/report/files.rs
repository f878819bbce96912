//! `--report DIR`: the files written for a report.

use std::path::Path;

use anyhow::{Context, Result};

use super::charts::charts;
use super::markdown::markdown;
use super::Report;
use crate::svg;

/// `--report DIR`: result.json, summary.md and the SVG plots.
pub fn write_dir(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("result.json"), json + "\n")
        .with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("summary.md"), markdown(report))?;
    for (file, chart) in charts(report) {
        std::fs::write(dir.join(&file), svg::render(&chart))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::PLOTS;
    use crate::report::test_fixtures::{report, sample_result};

    #[test]
    fn report_dir_has_json_markdown_and_plots() {
        let dir = std::env::temp_dir().join(format!("gregor-perf-report-{}", std::process::id()));
        let rep = report(vec![
            sample_result("gregor", 100.0, 10.0),
            sample_result("other", 80.0, 12.0),
        ]);
        write_dir(&rep, &dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(json["results"][1]["label"], "other");
        assert_eq!(json["librdkafka"], "2.12.1");
        let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(md.contains("## Ratios (to gregor)"), "{md}");
        assert!(
            md.contains("| produce MB/s | 100.00 | 80.00 | 0.80x |"),
            "{md}"
        );
        for (f, _) in PLOTS {
            let svg = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{f}"
            );
            assert!(svg.contains("<polyline"), "{f} has data");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
