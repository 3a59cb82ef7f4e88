//! The preference-data loader: TRL tokenization (BOS once, EOS appended to plain-text
//! completions, completion starts where prompt and prompt+completion diverge), the Llama-3
//! chat template, extra columns, truncation, bad rows (reported by line, skipped or fatal
//! under strict), padding and length-bucketed batches; and the embedded tokenizer.

use poc_runtime::data::pairs::parse_pairs;
use poc_runtime::data::{BOS, EOS, PAD, Tok, batches};

fn tok() -> Tok {
    Tok::tiny()
}

#[test]
fn tiny_tokenizer_is_byte_level_with_bos() {
    let t = tok();
    let ids = t.encode("Hi é", true).unwrap();
    assert_eq!(
        ids,
        vec![BOS, b'H' as u32, b'i' as u32, b' ' as u32, 0xC3, 0xA9]
    );
    assert_eq!(t.decode(&ids), "Hi é");
    assert_eq!(
        t.encode("<|eot_id|>", false).unwrap(),
        vec![260],
        "special tokens are single ids"
    );
    // The JSON is a real tokenizer.json: it round-trips through a file.
    let dir = tempfile::tempdir().unwrap();
    t.save(dir.path()).unwrap();
    let again = Tok::from_file(&dir.path().join("tokenizer.json"), EOS).unwrap();
    assert_eq!(again.encode("Hi é", true).unwrap(), ids);
}

#[test]
fn plain_rows_tokenize_like_trl() {
    let text = r#"{"prompt": "The cat is", "chosen": " kind.", "rejected": " rude!", "score_chosen": 8, "score_rejected": 2.5, "note": "x"}"#;
    let (pairs, bad) = parse_pairs(text, "d.jsonl", &tok(), 64, false).unwrap();
    assert!(bad.is_empty());
    let p = &pairs[0];
    assert_eq!(p.line, 1);
    let c = &p.chosen;
    assert_eq!(c.ids[0], BOS);
    assert_eq!(
        c.ids.iter().filter(|&&i| i == BOS).count(),
        1,
        "no duplicate BOS"
    );
    assert_eq!(c.completion_start, 1 + "The cat is".len());
    assert_eq!(
        &c.ids[c.completion_start..],
        &[
            b' ' as u32,
            b'k' as u32,
            b'i' as u32,
            b'n' as u32,
            b'd' as u32,
            b'.' as u32,
            EOS
        ]
    );
    assert_eq!(*p.rejected.ids.last().unwrap(), EOS);
    assert_eq!(p.columns.get("score_chosen"), Some(&8.0));
    assert_eq!(p.columns.get("score_rejected"), Some(&2.5));
    assert!(
        !p.columns.contains_key("note"),
        "non-numeric extras are not inputs"
    );
}

#[test]
fn conversational_rows_use_the_llama3_template() {
    let text = r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": [{"role": "assistant", "content": "Go."}]}"#;
    let t = tok();
    let (pairs, _) = parse_pairs(text, "d.jsonl", &t, 128, false).unwrap();
    let c = &pairs[0].chosen;
    let full = t.decode(&c.ids);
    assert!(full.starts_with("user\n\nHi"), "{full:?}");
    assert_eq!(c.ids[0], BOS);
    assert_eq!(c.ids.iter().filter(|&&i| i == BOS).count(), 1);
    let completion = t.decode(&c.ids[c.completion_start..]);
    assert_eq!(
        completion, "Hello.",
        "the completion is the assistant turn (special tokens skipped in decode)"
    );
    assert_eq!(
        *c.ids.last().unwrap(),
        260,
        "ends with <|eot_id|>, no extra EOS"
    );
}

#[test]
fn bad_rows_are_reported_by_line_and_skipped() {
    let text = [
        r#"{"prompt": "a", "chosen": " b", "rejected": " c"}"#,
        r#"{"prompt": "a", "chosen": " b"}"#,
        r#"{"prompt": "a", "chosen": 3, "rejected": " c"}"#,
        r#"{"prompt": "a", "chosen": "  ", "rejected": " c"}"#,
        "not json",
        "",
        &format!(
            r#"{{"prompt": "{}", "chosen": " b", "rejected": " c"}}"#,
            "p".repeat(100)
        ),
    ]
    .join("\n");
    let (pairs, bad) = parse_pairs(&text, "d.jsonl", &tok(), 32, false).unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(bad.len(), 5, "{bad:#?}");
    assert!(
        bad[0].starts_with("d.jsonl:2: missing field `rejected`"),
        "{}",
        bad[0]
    );
    assert!(
        bad[1].starts_with("d.jsonl:3:") && bad[1].contains("must all be strings"),
        "{}",
        bad[1]
    );
    assert!(
        bad[2].starts_with("d.jsonl:4:") && bad[2].contains("empty completion"),
        "{}",
        bad[2]
    );
    assert!(bad[3].starts_with("d.jsonl:5: invalid JSON"), "{}", bad[3]);
    assert!(
        bad[4].starts_with("d.jsonl:7:") && bad[4].contains("--max-length 32"),
        "{}",
        bad[4]
    );
    // Strict mode stops at the first bad row.
    let err = parse_pairs(&text, "d.jsonl", &tok(), 32, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("d.jsonl:2: missing field `rejected`"), "{err}");
    // Nothing usable is an error.
    let err = parse_pairs("not json\n", "d.jsonl", &tok(), 32, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable preference rows"), "{err}");
}

#[test]
fn long_completions_are_truncated() {
    let text = format!(
        r#"{{"prompt": "ab", "chosen": "{}", "rejected": " c"}}"#,
        "x".repeat(50)
    );
    let (pairs, _) = parse_pairs(&text, "d", &tok(), 16, false).unwrap();
    assert_eq!(pairs[0].chosen.ids.len(), 16);
    assert_eq!(pairs[0].chosen.completion_start, 3);
}

#[test]
fn batches_pad_mask_and_cover_every_pair_once() {
    let text = poc_runtime::data::synthetic::synthetic_jsonl(50, 1);
    let (pairs, _) = parse_pairs(&text, "s", &tok(), 64, false).unwrap();
    let bs = batches(&pairs, 8, PAD, 3, true);
    let mut seen: Vec<usize> = bs.iter().flat_map(|b| b.pairs.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    for b in &bs {
        let n = b.pairs.len();
        assert_eq!(b.tokens.len(), 2 * n, "chosen rows then rejected rows");
        let t = b.tokens[0].len();
        for (r, row) in b.tokens.iter().enumerate() {
            assert_eq!(row.len(), t);
            let real = b.mask[r].iter().filter(|&&m| m).count();
            assert!(row[real..].iter().all(|&x| x == PAD));
            assert!(
                b.completion[r]
                    .iter()
                    .zip(&b.mask[r])
                    .all(|(&c, &m)| !c || m),
                "completion ⊆ real tokens"
            );
        }
        for (k, &i) in b.pairs.iter().enumerate() {
            assert_eq!(
                &b.tokens[k][..pairs[i].chosen.ids.len()],
                &pairs[i].chosen.ids[..]
            );
            assert_eq!(
                &b.tokens[n + k][..pairs[i].rejected.ids.len()],
                &pairs[i].rejected.ids[..]
            );
        }
    }
    // Seeded: the same seed gives the same order.
    let again = batches(&pairs, 8, PAD, 3, true);
    assert_eq!(
        bs.iter().map(|b| b.pairs.clone()).collect::<Vec<_>>(),
        again.iter().map(|b| b.pairs.clone()).collect::<Vec<_>>()
    );
    // Without the rejected side: every pair once, its chosen row alone (bucketed by the
    // chosen length).
    let chosen = batches(&pairs, 8, PAD, 3, false);
    let mut seen: Vec<usize> = chosen.iter().flat_map(|b| b.pairs.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    for b in &chosen {
        assert_eq!(b.tokens.len(), b.pairs.len(), "chosen rows only");
        for (k, &i) in b.pairs.iter().enumerate() {
            let c = &pairs[i].chosen;
            assert_eq!(&b.tokens[k][..c.ids.len()], &c.ids[..]);
            assert!(b.tokens[k][c.ids.len()..].iter().all(|&x| x == PAD));
            let starts = b.completion[k].iter().position(|&m| m);
            assert_eq!(starts, Some(c.completion_start));
        }
    }
}

#[test]
fn demonstration_rows_in_trl_sft_formats_are_chosen_only_pairs() {
    let text = [
        r#"{"prompt": "Say hi ->", "completion": " hi", "weight": 2}"#,
        r#"{"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello."}]}"#,
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#,
        r#"{"prompt": "Say hi ->", "chosen": " hi", "rejected": " no"}"#,
    ]
    .join("\n");
    let t = tok();
    let (pairs, bad) = parse_pairs(&text, "sft.jsonl", &t, 128, false).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        pairs.iter().map(|p| p.demonstration).collect::<Vec<_>>(),
        [true, true, true, false]
    );
    for p in &pairs[..3] {
        assert_eq!(p.rejected, p.chosen);
    }
    // A plain demonstration tokenizes as the same preference row's chosen side.
    assert_eq!(pairs[0].chosen, pairs[3].chosen);
    assert_eq!(pairs[0].columns["weight"], 2.0);
    // `messages` is prompt + last assistant message, as `prompt`/`completion` lists are.
    assert_eq!(pairs[1].chosen, pairs[2].chosen);
    assert_eq!(
        t.decode(&pairs[2].chosen.ids[pairs[2].chosen.completion_start..]),
        "Hello."
    );
}

#[test]
fn multi_turn_demonstrations_train_on_every_assistant_turn() {
    let row = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "First."}, {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Second."}]}"#;
    let t = tok();
    let (pairs, bad) = parse_pairs(row, "chat.jsonl", &t, 256, false).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let c = &pairs[0].chosen;
    assert_eq!(c.earlier.len(), 1, "one earlier assistant turn");
    let batch = poc_runtime::data::pairs::padded(&[c], PAD, vec![0]);
    let trained: Vec<u32> = c
        .ids
        .iter()
        .zip(&batch.completion[0])
        .filter(|(_, m)| **m)
        .map(|(&id, _)| id)
        .collect();
    // Both assistant contents with their <|eot_id|>; no system, user or header tokens.
    assert_eq!(t.decode(&trained), "First.Second.");
    assert_eq!(trained.iter().filter(|&&id| id == 260).count(), 2);
    assert_eq!(
        trained.len(),
        "First.".len() + "Second.".len() + 2,
        "byte-level tokens of both turns plus their two <|eot_id|>"
    );
    // A single-turn conversation trains on its one assistant turn only.
    let one = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#;
    let (pairs, _) = parse_pairs(one, "chat.jsonl", &t, 256, false).unwrap();
    assert!(pairs[0].chosen.earlier.is_empty());
}

#[test]
fn bad_demonstration_rows_say_why() {
    for (row, want) in [
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}]}"#,
            "ends with a `user` message",
        ),
        (
            r#"{"messages": [{"role": "assistant", "content": "Hi"}]}"#,
            "needs a prompt before its last",
        ),
        (
            r#"{"prompt": "x", "completion": [{"role": "assistant", "content": "no"}]}"#,
            "both strings or both message lists",
        ),
        (r#"{"prompt": "x", "completion": "  "}"#, "empty completion"),
        (r#"{"prompt": "x"}"#, "missing field `chosen`"),
        (r#"{"messages": []}"#, "`messages` is empty"),
        (
            r#"{"prompt": "x", "completion": " y", "label": false}"#,
            "unpaired preference row",
        ),
    ] {
        let why = bad_reason(row, 64);
        assert!(why.contains(want), "{row}: {why}");
    }
}

#[test]
fn synthetic_data_is_deterministic() {
    assert_eq!(
        poc_runtime::data::synthetic::synthetic_jsonl(20, 9),
        poc_runtime::data::synthetic::synthetic_jsonl(20, 9)
    );
    assert_ne!(
        poc_runtime::data::synthetic::synthetic_jsonl(20, 9),
        poc_runtime::data::synthetic::synthetic_jsonl(20, 10)
    );
}

fn bad_reason(row: &str, max_length: usize) -> String {
    let (_, bad) = parse_pairs(
        &format!("{{\"prompt\": \"ok\", \"chosen\": \" a\", \"rejected\": \" b\"}}\n{row}"),
        "d.jsonl",
        &tok(),
        max_length,
        false,
    )
    .unwrap();
    assert_eq!(bad.len(), 1, "{row} should be bad: {bad:?}");
    assert!(bad[0].starts_with("d.jsonl:2: "), "{}", bad[0]);
    bad[0]["d.jsonl:2: ".len()..].to_string()
}

#[test]
fn conversational_bad_rows_say_why() {
    let user = r#"[{"role": "user", "content": "Hi"}]"#;
    let said = |s: &str| format!(r#"[{{"role": "assistant", "content": "{s}"}}]"#);
    let row =
        |p: &str, c: &str, r: &str| format!(r#"{{"prompt": {p}, "chosen": {c}, "rejected": {r}}}"#);
    assert_eq!(
        bad_reason(&row(user, &said("  "), &said("No.")), 128),
        "chosen: empty completion"
    );
    assert_eq!(
        bad_reason(&row(user, "[]", &said("No.")), 128),
        "chosen: empty completion"
    );
    assert!(
        bad_reason(&row(user, user, &said("No.")), 128)
            .contains("chosen: the completion starts with a `user` message")
    );
    assert_eq!(
        bad_reason(&row("[]", &said("a"), &said("b")), 128),
        "empty prompt"
    );
    assert!(
        bad_reason(&row(user, r#"[{"role": "assistant"}]"#, &said("b")), 128)
            .contains("`chosen` message 1 lacks a string `content`")
    );
    assert!(bad_reason(&row(user, "\" a\"", &said("b")), 128).contains("must all be strings"));
    assert!(bad_reason(&row("\"p\"", &said("a"), &said("b")), 128).contains("must all be strings"));
    assert!(
        bad_reason(r#"{"prompt": 3, "chosen": " a", "rejected": " b"}"#, 128)
            .contains("must all be strings")
    );
    assert_eq!(bad_reason("[1, 2]", 128), "expected a JSON object");
    assert_eq!(
        bad_reason(r#"{"chosen": " a", "rejected": " b"}"#, 128),
        "missing field `prompt`"
    );
}

#[test]
fn implicit_prompts_are_the_shared_leading_messages() {
    let t = tok();
    let explicit = r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": [{"role": "assistant", "content": "Go."}]}"#;
    let implicit = r#"{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go."}]}"#;
    let (a, _) = parse_pairs(explicit, "d", &t, 128, true).unwrap();
    let (b, _) = parse_pairs(implicit, "d", &t, 128, true).unwrap();
    assert_eq!(a[0].chosen, b[0].chosen);
    assert_eq!(a[0].rejected, b[0].rejected);
    let nothing_shared = r#"{"chosen": [{"role": "user", "content": "A"}], "rejected": [{"role": "user", "content": "B"}]}"#;
    assert!(bad_reason(nothing_shared, 128).contains("missing field `prompt`"));
}

#[test]
fn a_prompt_that_already_has_bos_gets_no_second_one() {
    let t = tok();
    let row =
        r#"{"prompt": "<|begin_of_text|>The cat is", "chosen": " kind.", "rejected": " rude."}"#;
    let (with, _) = parse_pairs(row, "d", &t, 64, true).unwrap();
    let row = r#"{"prompt": "The cat is", "chosen": " kind.", "rejected": " rude."}"#;
    let (without, _) = parse_pairs(row, "d", &t, 64, true).unwrap();
    assert_eq!(with[0].chosen, without[0].chosen);
    assert_eq!(with[0].chosen.ids.iter().filter(|&&i| i == BOS).count(), 1);
}

#[test]
fn max_length_cuts_completions_and_rejects_prompts_without_room() {
    let t = tok();
    // BOS + 6 prompt bytes = 7 tokens.
    let row = r#"{"prompt": "abcdef", "chosen": " kind.", "rejected": " rude."}"#;
    let (pairs, _) = parse_pairs(row, "d", &t, 8, true).unwrap();
    assert_eq!(pairs[0].chosen.ids.len(), 8);
    assert_eq!(
        pairs[0].chosen.completion_start, 7,
        "one completion token fits"
    );
    assert!(
        bad_reason(row, 7).contains(
            "prompt is 7 tokens, leaving no room for the completion under --max-length 7"
        ),
        "{}",
        bad_reason(row, 7)
    );
    // A completion cut by max_length gets no EOS; an uncut one does.
    assert_ne!(*pairs[0].chosen.ids.last().unwrap(), EOS);
    let (pairs, _) = parse_pairs(row, "d", &t, 64, true).unwrap();
    assert_eq!(*pairs[0].chosen.ids.last().unwrap(), EOS);
}

#[test]
fn numeric_columns_are_kept_per_row() {
    let text = [
        r#"{"prompt": "a", "chosen": " b", "rejected": " c", "score_chosen": 9, "score_rejected": -1.5, "ok": true, "id": "x7", "meta": {"k": 1}}"#,
        r#"{"prompt": "a", "chosen": " b", "rejected": " c", "score_chosen": 3.25}"#,
    ]
    .join("\n");
    let (pairs, _) = parse_pairs(&text, "d", &tok(), 64, true).unwrap();
    let cols = |i: usize| pairs[i].columns.clone().into_iter().collect::<Vec<_>>();
    assert_eq!(
        cols(0),
        [
            ("score_chosen".to_string(), 9.0),
            ("score_rejected".to_string(), -1.5)
        ]
    );
    assert_eq!(cols(1), [("score_chosen".to_string(), 3.25)]);
    assert_eq!((pairs[0].line, pairs[1].line), (1, 2));
}

#[test]
fn a_missing_data_file_is_named() {
    let err = poc_runtime::data::load_pairs(
        std::path::Path::new("/nonexistent/prefs.jsonl"),
        &tok(),
        64,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/prefs.jsonl"), "{err}");
}

#[test]
fn batch_masks_mark_real_and_completion_tokens() {
    let text = [
        r#"{"prompt": "ab", "chosen": " c", "rejected": " defg"}"#,
        r#"{"prompt": "abcd", "chosen": " e", "rejected": " f"}"#,
    ]
    .join("\n");
    let (pairs, _) = parse_pairs(&text, "d", &tok(), 64, true).unwrap();
    let b = poc_runtime::data::batch_of(&pairs, &[0, 1], PAD);
    // Rows: chosen 0, chosen 1, rejected 0, rejected 1; the widest is BOS+2+5+EOS = 9.
    assert_eq!(b.tokens.iter().map(Vec::len).collect::<Vec<_>>(), [9; 4]);
    let ones = |m: &Vec<bool>| m.iter().map(|&x| x as u8).collect::<Vec<_>>();
    assert_eq!(ones(&b.mask[0]), [1, 1, 1, 1, 1, 1, 0, 0, 0]);
    assert_eq!(ones(&b.completion[0]), [0, 0, 0, 1, 1, 1, 0, 0, 0]);
    assert_eq!(ones(&b.completion[1]), [0, 0, 0, 0, 0, 1, 1, 1, 0]);
    assert_eq!(ones(&b.completion[2]), [0, 0, 0, 1, 1, 1, 1, 1, 1]);
    assert_eq!(ones(&b.mask[2]), [1; 9]);
    assert_eq!(&b.tokens[0][6..], &[PAD; 3]);
}
