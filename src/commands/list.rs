//! `poc list`: the shipped objectives, one line each.

use crate::edge::Failure;
use poc_pipelines::library;

/// Prints each shipped objective's name and the first sentence of its documentation.
pub fn run() -> Result<(), Failure> {
    for (name, src) in library::SHIPPED {
        let summary = poc_compiler::check_source(src)
            .map(|o| first_sentence(&o.docs))
            .unwrap_or_default();
        println!("{name:<20} {summary}");
    }
    Ok(())
}

/// The first sentence of a doc comment, which may run over several lines: up to the first
/// `.` that ends a word other than an abbreviation (`et al.`, `e.g.`) and is followed by a
/// space or the end.
fn first_sentence(docs: &[String]) -> String {
    let text = docs
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    const ABBREVIATIONS: [&str; 5] = ["al", "e.g", "i.e", "vs", "cf"];
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('.') {
        let ends = bytes.get(i + 1).is_none_or(|b| *b == b' ');
        let word = text[..i].rsplit(' ').next().unwrap_or("");
        if ends && !ABBREVIATIONS.contains(&word) {
            return text[..=i].to_string();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::first_sentence;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_sentence_over_two_lines_is_joined_and_cut_at_its_end() {
        let docs = lines(&[
            "Wang et al.'s mixed preference optimization: a weighted sum of DPO,",
            "written by composition. (Not the pipeline.)",
            "Wang et al. 2024, \"Title\".",
        ]);
        assert_eq!(
            first_sentence(&docs),
            "Wang et al.'s mixed preference optimization: a weighted sum of DPO, written by composition."
        );
        assert_eq!(
            first_sentence(&lines(&["As Lambert et al. 2024 do. More."])),
            "As Lambert et al. 2024 do."
        );
        assert_eq!(first_sentence(&lines(&["No full stop"])), "No full stop");
    }

    #[test]
    fn every_shipped_objective_has_a_sentence() {
        for (name, src) in poc_pipelines::library::SHIPPED {
            let o = poc_compiler::check_source(src).unwrap();
            let s = first_sentence(&o.docs);
            assert!(s.ends_with('.') && s.len() > 10, "{name}: {s:?}");
        }
    }
}
