//! Whisper's English text normalizer, used to put reference and hypothesis transcripts into one
//! canonical form before scoring them (`steno eval`).
//!
//! Text in, text out: lower-cased words separated by single spaces, with bracketed and
//! parenthesised asides, fillers ("um", "hmm") and punctuation removed, contractions and titles
//! expanded, spelled-out numbers turned into digits and British spellings made American.
//!
//! This is a faithful port of `whisper/normalizers/english.py` and `basic.py` from
//! openai-whisper 20250625. Scores are only comparable with published Whisper numbers if the
//! output is identical to the Python reference, so the port keeps the Python's quirks on purpose
//! (for example "ninth" is not recognised as an ordinal, because the Python derives "nineth").
//! Where Python's `re` and Rust's `regex` differ, the Python semantics are reproduced:
//!
//! - Python's `\w` (str patterns) is exactly `[\p{L}\p{N}_]`; the `regex` crate's `\w` also
//!   counts marks and connector punctuation, so Python's `\b` is rebuilt by `BoundedRegex`.
//! - Python's `\s` and `str.split()` also treat U+001C..U+001F as whitespace.
//!
//! The British→American spelling map (whisper's `english.json`) is not part of this crate; it is
//! read at run time (the setup script copies it to `models/whisper-assets/english.json`).
//!
//! Known, unavoidable difference: character properties come from the Unicode tables of the Rust
//! crates (Unicode 16+), Python's `unicodedata` from its own (14.0 in Python 3.11), so characters
//! assigned in newer Unicode versions may be classified differently.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::{Captures, Regex};
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// Python's `\w` for str patterns: `_` or `str.isalnum()`, which is exactly letters and numbers.
const PY_NON_WORD: &str = r"[^\p{L}\p{N}_]";
/// Python's `\s` for str patterns: `str.isspace()`, i.e. `White_Space` plus U+001C..U+001F.
const PY_SPACE: &str = r"[\s\x1C-\x1F]";

/// Python's `str.isspace()`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.split()` without arguments.
fn py_split(s: &str) -> impl DoubleEndedIterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("normalizer regex patterns are constants and valid")
}

/// The text of a capture group, or "" if it did not take part (Python's `\N` behaves the same).
fn group<'t>(caps: &Captures<'t>, name: &str) -> &'t str {
    caps.name(name).map_or("", |m| m.as_str())
}

/// A Python pattern of the form `\bBODY\b` or `BODY\b`, where BODY starts and ends with word
/// characters (every `\b` in english.py is of this form).
///
/// Next to a word character, `\b` means "the character on the other side is not a word
/// character (or there is none)". The `regex` crate has no lookaround and a different `\w`, so
/// this compiles `(?:^|NONWORD)(?P<body>BODY)(?:NONWORD|$)` and treats only the `body` group as
/// the match: the characters around it are only checked, and the next search resumes at the end
/// of the body, as Python resumes after its zero-width assertions. That is the same as Python's
/// search because
/// - the checks around BODY accept or reject a candidate without changing which alternative of
///   BODY is preferred, so leftmost-first matching picks Python's backtracking result;
/// - a resumed search cannot look behind its start, but the character there ends the previous
///   body, so it is a word character and Python's leading `\b` fails right there too.
struct BoundedRegex(Regex);

impl BoundedRegex {
    fn new(leading_boundary: bool, body: &str) -> Self {
        let lead = if leading_boundary {
            format!("(?:^|{PY_NON_WORD})")
        } else {
            String::new()
        };
        Self(compile(&format!("{lead}(?P<body>{body})(?:{PY_NON_WORD}|$)")))
    }

    /// Non-overlapping matches, left to right, like Python's `re.finditer`.
    fn captures_iter<'t>(&self, text: &'t str) -> impl Iterator<Item = Captures<'t>> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos > text.len() {
                return None;
            }
            let caps = self.0.captures_at(text, pos)?;
            let body = caps.name("body")?;
            // Bodies are never empty; still, never loop on the same position.
            pos = if body.is_empty() {
                body.end() + text[body.end()..].chars().next().map_or(1, char::len_utf8)
            } else {
                body.end()
            };
            Some(caps)
        })
    }

    /// Python's `re.sub(pattern, repl, text)` with a function as `repl`.
    fn replace_all(&self, text: &str, mut replacement: impl FnMut(&Captures) -> String) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in self.captures_iter(text) {
            if let Some(body) = caps.name("body") {
                out.push_str(&text[last..body.start()]);
                out.push_str(&replacement(&caps));
                last = body.end();
            }
        }
        out.push_str(&text[last..]);
        out
    }

    /// Python's `re.split(pattern, text)` (the pattern has no capture groups in Python).
    fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        let mut last = 0;
        for caps in self.captures_iter(text) {
            if let Some(body) = caps.name("body") {
                pieces.push(&text[last..body.start()]);
                last = body.end();
            }
        }
        pieces.push(&text[last..]);
        pieces
    }
}

/// `ADDITIONAL_DIACRITICS` in basic.py: non-ASCII letters that NFKD does not decompose.
fn additional_diacritic(c: char) -> Option<&'static str> {
    Some(match c {
        'œ' => "oe",
        'Œ' => "OE",
        'ø' => "o",
        'Ø' => "O",
        'æ' => "ae",
        'Æ' => "AE",
        'ß' => "ss",
        'ẞ' => "SS",
        'đ' => "d",
        'Đ' => "D",
        'ð' => "d",
        'Ð' => "D",
        'þ' => "th",
        'Þ' => "th",
        'ł' => "l",
        'Ł' => "L",
        _ => return None,
    })
}

/// Port of `remove_symbols_and_diacritics` (basic.py): after NFKD, drop nonspacing marks (the
/// diacritics), spell out the `ADDITIONAL_DIACRITICS` letters, and turn every other mark, symbol
/// and punctuation character into a space, except the characters in `keep`.
pub fn remove_symbols_and_diacritics(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd() {
        if keep.contains(c) {
            out.push(c);
        } else if let Some(replacement) = additional_diacritic(c) {
            out.push_str(replacement);
        } else {
            let category = get_general_category(c).abbreviation();
            if category == "Mn" {
                // dropped
            } else if category.starts_with(['M', 'S', 'P']) {
                out.push(' ');
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Port of `remove_symbols` (basic.py): after NFKC, every mark, symbol and punctuation character
/// becomes a space; diacritics stay (NFKC composes them).
pub fn remove_symbols(s: &str) -> String {
    s.nfkc()
        .map(|c| {
            if get_general_category(c).abbreviation().starts_with(['M', 'S', 'P']) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// A non-negative integer of any size, as canonical ASCII decimal digits (no leading zeros).
///
/// `process_words` does arithmetic on Python ints, which never overflow: "decillion" alone is
/// 10^33, and runs of spoken digits ("one two three ...") can be longer than any machine integer.
/// Only the few operations the Python uses are provided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Natural(String);

impl Natural {
    fn from_u64(n: u64) -> Self {
        Self(n.to_string())
    }

    /// From decimal digit values (most significant first), dropping leading zeros.
    fn from_digits(digits: impl IntoIterator<Item = u32>) -> Self {
        let s: String = digits
            .into_iter()
            .skip_while(|&d| d == 0)
            .filter_map(|d| char::from_digit(d, 10))
            .collect();
        if s.is_empty() { Self("0".to_owned()) } else { Self(s) }
    }

    /// 10^exponent.
    fn pow10(exponent: u32) -> Self {
        Self(format!("1{}", "0".repeat(exponent as usize)))
    }

    fn is_zero(&self) -> bool {
        self.0 == "0"
    }

    /// `self % 10^k` for small k.
    fn rem_pow10(&self, k: usize) -> u64 {
        let tail = &self.0[self.0.len().saturating_sub(k)..];
        tail.bytes().fold(0, |acc, b| acc * 10 + u64::from(b - b'0'))
    }

    /// `self * 10^k`.
    fn shift(&self, k: u32) -> Self {
        if self.is_zero() {
            self.clone()
        } else {
            Self(format!("{}{}", self.0, "0".repeat(k as usize)))
        }
    }

    fn add(&self, other: &Self) -> Self {
        let (mut a, mut b) = (self.0.bytes().rev(), other.0.bytes().rev());
        let mut digits = Vec::with_capacity(self.0.len().max(other.0.len()) + 1);
        let mut carry = 0;
        loop {
            let (x, y) = (a.next(), b.next());
            if x.is_none() && y.is_none() && carry == 0 {
                break;
            }
            let sum = x.map_or(0, |d| d - b'0') + y.map_or(0, |d| d - b'0') + carry;
            digits.push(char::from(b'0' + sum % 10));
            carry = sum / 10;
        }
        Self(digits.into_iter().rev().collect())
    }

    fn add_u64(&self, n: u64) -> Self {
        self.add(&Self::from_u64(n))
    }

    /// Python's `value // 1000 * 1000 + value % 1000 * 10^k`.
    fn apply_multiplier(&self, k: u32) -> Self {
        let residual = self.rem_pow10(3);
        let before = if self.0.len() > 3 {
            Self(format!("{}000", &self.0[..self.0.len() - 3]))
        } else {
            Self("0".to_owned())
        };
        before.add(&Self::from_u64(residual).shift(k))
    }
}

impl fmt::Display for Natural {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of a Unicode decimal digit (category Nd), as Python's `int()` reads it.
///
/// Unicode guarantees that Nd characters come in contiguous runs of ten, from 0 to 9, so the
/// value is the offset from the start of the run of Nd characters modulo ten.
fn decimal_digit_value(c: char) -> Option<u32> {
    if let Some(d) = c.to_digit(10) {
        return Some(d);
    }
    let is_nd = |c: char| get_general_category(c) == GeneralCategory::DecimalNumber;
    if !is_nd(c) {
        return None;
    }
    let mut start = u32::from(c);
    while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_nd(prev) {
            break;
        }
        start -= 1;
    }
    Some((u32::from(c) - start) % 10)
}

/// Python's `Fraction(s) * 10**k`, if `s` parses and the product is an integer.
///
/// Only strings made of decimal digits and dots reach this (see `process_words`); for those,
/// `Fraction` accepts `digits* ('.' digits*)?` with a digit first or right after the dot.
fn fraction_times_pow10(s: &str, k: u32) -> Option<Natural> {
    let (integer, fraction) = s.split_once('.').unwrap_or((s, ""));
    let integer: Vec<u32> = integer.chars().map(decimal_digit_value).collect::<Option<_>>()?;
    let mut fraction: Vec<u32> = fraction.chars().map(decimal_digit_value).collect::<Option<_>>()?;
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    // Trailing zeros after the point do not affect the value.
    while fraction.last() == Some(&0) {
        fraction.pop();
    }
    let k = k as usize;
    if fraction.len() > k {
        return None; // denominator != 1
    }
    let zeros = std::iter::repeat_n(0, k - fraction.len());
    Some(Natural::from_digits(integer.into_iter().chain(fraction).chain(zeros)))
}

/// `value` in `EnglishNumberNormalizer.process_words`: Python stores either an int or a str.
#[derive(Debug, Clone)]
enum Value {
    Int(Natural),
    Str(String),
}

impl Value {
    /// Python's `str(value or "")`: the int 0 is falsy.
    fn or_empty(value: &Option<Value>) -> String {
        match value {
            Some(Value::Int(n)) if n.is_zero() => String::new(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => n.fmt(f),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// Which of `EnglishNumberNormalizer`'s word tables a word is in; the variant order is the order
/// of the `elif` chain in `process_words`. Multipliers are stored as powers of ten.
#[derive(Debug, Clone, Copy)]
enum NumberWord {
    Zero,
    One(u64),
    OneSuffixed(u64, &'static str),
    Ten(u64),
    TenSuffixed(u64, &'static str),
    Multiplier(u32),
    MultiplierSuffixed(u32, &'static str),
    PrecedingPrefixer(char),
    FollowingPrefixer(char),
    /// `suffixers["per"] = {"cent": "%"}`
    Per,
    /// `suffixers["percent"] = "%"`
    Percent,
    /// `specials`: and, double, triple, point
    Special,
}

const ONES: [&str; 19] = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [(&str, u64); 8] = [
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];
const MULTIPLIERS: [(&str, u32); 12] = [
    ("hundred", 2),
    ("thousand", 3),
    ("million", 6),
    ("billion", 9),
    ("trillion", 12),
    ("quadrillion", 15),
    ("quintillion", 18),
    ("sextillion", 21),
    ("septillion", 24),
    ("octillion", 27),
    ("nonillion", 30),
    ("decillion", 33),
];

/// Port of `EnglishNumberNormalizer` (english.py): spelled-out numbers to arabic numbers,
/// keeping suffixes (`1960s`, `32nd`), moving currency symbols before the number, and reading
/// successive single digits as one number (`one oh one` -> `101`).
struct EnglishNumberNormalizer {
    words: HashMap<String, NumberWord>,
    numeric: Regex,
    and_a_half: BoundedRegex,
    letter_digit: Regex,
    digit_letter: Regex,
    digit_suffix: BoundedRegex,
    combine_cents: BoundedRegex,
    extract_cents: BoundedRegex,
    one: BoundedRegex,
}

impl EnglishNumberNormalizer {
    /// Port of `__init__`: the tables are derived from the base words exactly as the Python
    /// derives them.
    fn new() -> Self {
        let mut table: Vec<(String, NumberWord)> = Vec::new();
        for zero in ["o", "oh", "zero"] {
            table.push((zero.to_owned(), NumberWord::Zero));
        }
        let ones = (1u64..).zip(ONES);
        for (value, name) in ones.clone() {
            table.push((name.to_owned(), NumberWord::One(value)));
        }
        // ones_plural, then ones_ordinal
        for (value, name) in ones.clone() {
            let plural = if name == "six" {
                "sixes".to_owned()
            } else {
                format!("{name}s")
            };
            table.push((plural, NumberWord::OneSuffixed(value, "s")));
        }
        for (name, value, suffix) in [
            ("zeroth", 0, "th"),
            ("first", 1, "st"),
            ("second", 2, "nd"),
            ("third", 3, "rd"),
            ("fifth", 5, "th"),
            ("twelfth", 12, "th"),
        ] {
            table.push((name.to_owned(), NumberWord::OneSuffixed(value, suffix)));
        }
        for (value, name) in ones.filter(|&(v, _)| v > 3 && v != 5 && v != 12) {
            // Yields "eighth" but also "nineth": "ninth" is deliberately not a number word.
            let ordinal = format!("{name}{}", if name.ends_with('t') { "h" } else { "th" });
            table.push((ordinal, NumberWord::OneSuffixed(value, "th")));
        }
        for (name, value) in TENS {
            table.push((name.to_owned(), NumberWord::Ten(value)));
        }
        for (name, value) in TENS {
            let plural = name.replace('y', "ies");
            table.push((plural, NumberWord::TenSuffixed(value, "s")));
        }
        for (name, value) in TENS {
            let ordinal = name.replace('y', "ieth");
            table.push((ordinal, NumberWord::TenSuffixed(value, "th")));
        }
        for (name, exponent) in MULTIPLIERS {
            table.push((name.to_owned(), NumberWord::Multiplier(exponent)));
        }
        for (name, exponent) in MULTIPLIERS {
            let plural = format!("{name}s");
            table.push((plural, NumberWord::MultiplierSuffixed(exponent, "s")));
        }
        for (name, exponent) in MULTIPLIERS {
            let ordinal = format!("{name}th");
            table.push((ordinal, NumberWord::MultiplierSuffixed(exponent, "th")));
        }
        for (name, symbol) in [("minus", '-'), ("negative", '-'), ("plus", '+'), ("positive", '+')] {
            table.push((name.to_owned(), NumberWord::PrecedingPrefixer(symbol)));
        }
        for (name, symbol) in [
            ("pound", '£'),
            ("pounds", '£'),
            ("euro", '€'),
            ("euros", '€'),
            ("dollar", '$'),
            ("dollars", '$'),
            ("cent", '¢'),
            ("cents", '¢'),
        ] {
            table.push((name.to_owned(), NumberWord::FollowingPrefixer(symbol)));
        }
        table.push(("per".to_owned(), NumberWord::Per));
        table.push(("percent".to_owned(), NumberWord::Percent));
        for special in ["and", "double", "triple", "point"] {
            table.push((special.to_owned(), NumberWord::Special));
        }

        let mut words = HashMap::with_capacity(table.len());
        for (word, kind) in table {
            // The tables do not overlap; if they did, the earliest `elif` would win.
            words.entry(word).or_insert(kind);
        }

        Self {
            words,
            numeric: compile(r"^\d+(\.\d+)?$"),
            and_a_half: BoundedRegex::new(true, &format!("and{PY_SPACE}+a{PY_SPACE}+half")),
            letter_digit: compile(r"([a-z])([0-9])"),
            digit_letter: compile(r"([0-9])([a-z])"),
            digit_suffix: BoundedRegex::new(false, &format!("(?P<digit>[0-9]){PY_SPACE}+(?P<suffix>st|nd|rd|th|s)")),
            combine_cents: BoundedRegex::new(
                false,
                "(?P<currency>[€£$])(?P<integer>[0-9]+) (?:and )?¢(?P<cents>[0-9]{1,2})",
            ),
            extract_cents: BoundedRegex::new(false, "[€£$]0.(?P<cents>[0-9]{1,2})"),
            one: BoundedRegex::new(true, "1(?P<s>s?)"),
        }
    }

    fn kind(&self, word: Option<&str>) -> Option<NumberWord> {
        word.and_then(|w| self.words.get(w).copied())
    }

    fn is_numeric(&self, word: &str) -> bool {
        self.numeric.is_match(word)
    }

    /// `self.decimals`: zeros, ones and tens.
    fn is_decimal(&self, word: &str) -> bool {
        matches!(
            self.kind(Some(word)),
            Some(NumberWord::Zero | NumberWord::One(_) | NumberWord::Ten(_))
        )
    }

    fn is_multiplier(&self, word: &str) -> bool {
        matches!(self.kind(Some(word)), Some(NumberWord::Multiplier(_)))
    }

    /// Port of `process_words`: the state machine over whitespace-separated words.
    fn process_words(&self, words: &[&str]) -> Vec<String> {
        let mut state = ProcessState::default();
        let mut skip = false;

        for (i, &current) in words.iter().enumerate() {
            if skip {
                skip = false;
                continue;
            }
            let prev = i.checked_sub(1).map(|j| words[j]);
            let next = words.get(i + 1).copied();
            let prev_kind = self.kind(prev);
            let next_kind = self.kind(next);
            let prev_in_ones = matches!(prev_kind, Some(NumberWord::One(_)));
            let prev_in_tens = matches!(prev_kind, Some(NumberWord::Ten(_)));
            let next_in_words = next_kind.is_some();
            let next_is_numeric = next.is_some_and(|n| self.is_numeric(n));

            let first = current.chars().next();
            let has_prefix = first.is_some_and(|c| "-+£€$¢".contains(c));
            let current_without_prefix = match first {
                Some(c) if has_prefix => &current[c.len_utf8()..],
                _ => current,
            };

            if self.is_numeric(current_without_prefix) {
                // arabic numbers (potentially with signs and fractions)
                if let Some(value) = &state.value {
                    match value {
                        Value::Str(s) if s.ends_with('.') => {
                            // concatenate decimals / ip address components
                            state.value = Some(Value::Str(format!("{s}{current}")));
                            continue;
                        }
                        _ => state.flush(),
                    }
                }
                if has_prefix {
                    state.prefix = first;
                }
                state.value = Some(match fraction_times_pow10(current_without_prefix, 0) {
                    // store integers as int
                    Some(integer) => Value::Int(integer),
                    None => Value::Str(current_without_prefix.to_owned()),
                });
                continue;
            }

            let Some(kind) = self.kind(Some(current)) else {
                // non-numeric words
                state.flush();
                state.output(current.to_owned());
                continue;
            };

            match kind {
                NumberWord::Zero => {
                    state.value = Some(Value::Str(Value::or_empty(&state.value) + "0"));
                }
                NumberWord::One(ones) => {
                    state.value = Some(match state.value.take() {
                        None => Value::Int(Natural::from_u64(ones)),
                        Some(Value::Int(n)) if !prev_in_ones => Self::add_ones(n, ones),
                        Some(value) => Value::Str(Self::append_ones(&value, ones, prev_in_tens)),
                    });
                }
                NumberWord::OneSuffixed(ones, suffix) => {
                    // ordinal or cardinal; yield the number right away
                    let number = match state.value.take() {
                        None => ones.to_string(),
                        Some(Value::Int(n)) if !prev_in_ones => Self::add_ones(n, ones).to_string(),
                        Some(value) => Self::append_ones(&value, ones, prev_in_tens),
                    };
                    state.output(number + suffix);
                }
                NumberWord::Ten(tens) => {
                    state.value = Some(match state.value.take() {
                        None => Value::Int(Natural::from_u64(tens)),
                        Some(Value::Str(s)) => Value::Str(format!("{s}{tens}")),
                        Some(Value::Int(n)) if n.rem_pow10(2) == 0 => Value::Int(n.add_u64(tens)),
                        Some(Value::Int(n)) => Value::Str(format!("{n}{tens}")),
                    });
                }
                NumberWord::TenSuffixed(tens, suffix) => {
                    // ordinal or cardinal; yield the number right away
                    let number = match state.value.take() {
                        None => tens.to_string(),
                        Some(Value::Str(s)) => format!("{s}{tens}"),
                        Some(Value::Int(n)) if n.rem_pow10(2) == 0 => n.add_u64(tens).to_string(),
                        Some(Value::Int(n)) => format!("{n}{tens}"),
                    };
                    state.output(number + suffix);
                }
                NumberWord::Multiplier(exponent) => match state.value.take() {
                    None => state.value = Some(Value::Int(Natural::pow10(exponent))),
                    Some(Value::Int(n)) if n.is_zero() => state.value = Some(Value::Int(n)),
                    Some(Value::Str(s)) => match fraction_times_pow10(&s, exponent) {
                        Some(product) => state.value = Some(Value::Int(product)),
                        None => {
                            state.output(s);
                            state.value = Some(Value::Int(Natural::pow10(exponent)));
                        }
                    },
                    Some(Value::Int(n)) => {
                        state.value = Some(Value::Int(n.apply_multiplier(exponent)));
                    }
                },
                NumberWord::MultiplierSuffixed(exponent, suffix) => {
                    // yields right away, leaving no value (the Python's `value = None`)
                    match state.value.take() {
                        None => state.output(format!("{}{suffix}", Natural::pow10(exponent))),
                        Some(Value::Str(s)) => match fraction_times_pow10(&s, exponent) {
                            Some(product) => state.output(format!("{product}{suffix}")),
                            None => {
                                state.output(s);
                                state.output(format!("{}{suffix}", Natural::pow10(exponent)));
                            }
                        },
                        Some(Value::Int(n)) => {
                            state.output(format!("{}{suffix}", n.apply_multiplier(exponent)));
                        }
                    }
                }
                NumberWord::PrecedingPrefixer(symbol) => {
                    // apply prefix (positive, minus, etc.) if it precedes a number
                    state.flush();
                    if next_in_words || next_is_numeric {
                        state.prefix = Some(symbol);
                    } else {
                        state.output(current.to_owned());
                    }
                }
                NumberWord::FollowingPrefixer(symbol) => {
                    // apply prefix (dollars, cents, etc.) only after a number
                    if state.value.is_some() {
                        state.prefix = Some(symbol);
                        state.flush();
                    } else {
                        state.output(current.to_owned());
                    }
                }
                NumberWord::Per => match state.value.take() {
                    Some(value) if next == Some("cent") => {
                        state.output(format!("{value}%"));
                        skip = true;
                    }
                    Some(value) => {
                        state.output(value.to_string());
                        state.output(current.to_owned());
                    }
                    None => state.output(current.to_owned()),
                },
                NumberWord::Percent => match state.value.take() {
                    Some(value) => state.output(format!("{value}%")),
                    None => state.output(current.to_owned()),
                },
                NumberWord::Special => {
                    if !next_in_words && !next_is_numeric {
                        // apply special handling only if the next word can be numeric
                        state.flush();
                        state.output(current.to_owned());
                    } else if current == "and" {
                        // ignore "and" after hundreds, thousands, etc.
                        if !prev.is_some_and(|p| self.is_multiplier(p)) {
                            state.flush();
                            state.output(current.to_owned());
                        }
                    } else if current == "double" || current == "triple" {
                        let digit = match next_kind {
                            Some(NumberWord::One(ones)) => Some(ones),
                            Some(NumberWord::Zero) => Some(0),
                            _ => None,
                        };
                        if let Some(digit) = digit {
                            let repeats = if current == "double" { 2 } else { 3 };
                            let digits = digit.to_string().repeat(repeats);
                            state.value = Some(Value::Str(Value::or_empty(&state.value) + &digits));
                            skip = true;
                        } else {
                            state.flush();
                            state.output(current.to_owned());
                        }
                    } else if next.is_some_and(|n| self.is_decimal(n)) || next_is_numeric {
                        // "point"; when the next word cannot follow a point, the Python drops it
                        state.value = Some(Value::Str(Value::or_empty(&state.value) + "."));
                    }
                }
            }
        }

        state.flush();
        state.out
    }

    /// The `isinstance(value, str) or prev in self.ones` branch for ones: append the digit,
    /// replacing the last zero after a tens word ("twenty" "one" -> "21").
    fn append_ones(value: &Value, ones: u64, prev_in_tens: bool) -> String {
        let mut s = value.to_string();
        if prev_in_tens && ones < 10 {
            // The Python asserts that the last character is "0" here.
            s.pop();
        }
        format!("{s}{ones}")
    }

    /// The int branches for ones: add when the place is free ("twenty" + "one" -> 21,
    /// "hundred" + "twelve" -> 112), otherwise read the words as digits.
    fn add_ones(n: Natural, ones: u64) -> Value {
        let place = if ones < 10 { 1 } else { 2 };
        if n.rem_pow10(place) == 0 {
            Value::Int(n.add_u64(ones))
        } else {
            Value::Str(format!("{n}{ones}"))
        }
    }

    /// Port of `preprocess`.
    fn preprocess(&self, s: &str) -> String {
        // replace "<number> and a half" with "<number> point five"
        let segments = self.and_a_half.split(s);
        let mut results: Vec<&str> = Vec::new();
        for (i, &segment) in segments.iter().enumerate() {
            if segment.trim_matches(is_py_space).is_empty() {
                continue;
            }
            results.push(segment);
            if i != segments.len() - 1 {
                let last_word = py_split(segment).next_back().unwrap_or_default();
                if self.is_decimal(last_word) || self.is_multiplier(last_word) {
                    results.push("point five");
                } else {
                    results.push("and a half");
                }
            }
        }
        let s = results.join(" ");

        // put a space at number/letter boundary
        let s = self.letter_digit.replace_all(&s, "${1} ${2}");
        let s = self.digit_letter.replace_all(&s, "${1} ${2}");

        // but remove spaces which could be a suffix
        self.digit_suffix
            .replace_all(&s, |caps| format!("{}{}", group(caps, "digit"), group(caps, "suffix")))
    }

    /// Port of `postprocess`.
    fn postprocess(&self, s: &str) -> String {
        // apply currency postprocessing; "$2 and ¢7" -> "$2.07"
        let s = self.combine_cents.replace_all(s, |caps| {
            // one or two ASCII digits always parse
            let cents: u32 = group(caps, "cents").parse().unwrap_or_default();
            format!("{}{}.{cents:02}", group(caps, "currency"), group(caps, "integer"))
        });
        let s = self.extract_cents.replace_all(&s, |caps| {
            let cents: u32 = group(caps, "cents").parse().unwrap_or_default();
            format!("¢{cents}")
        });

        // write "one(s)" instead of "1(s)", just for the readability
        self.one.replace_all(&s, |caps| format!("one{}", group(caps, "s")))
    }

    /// Port of `__call__`.
    fn normalize(&self, s: &str) -> String {
        let s = self.preprocess(s);
        let words: Vec<&str> = py_split(&s).collect();
        let s = self.process_words(&words).join(" ");
        self.postprocess(&s)
    }
}

/// `prefix`, `value` and the generator's output in `process_words`.
#[derive(Default)]
struct ProcessState {
    prefix: Option<char>,
    value: Option<Value>,
    out: Vec<String>,
}

impl ProcessState {
    /// Python's nested `output`: emit `result` with the pending prefix and reset the state.
    fn output(&mut self, result: String) {
        let result = match self.prefix.take() {
            Some(prefix) => format!("{prefix}{result}"),
            None => result,
        };
        self.value = None;
        self.out.push(result);
    }

    /// Python's `if value is not None: yield output(value)`.
    fn flush(&mut self) {
        if let Some(value) = self.value.take() {
            self.output(value.to_string());
        }
    }
}

/// Errors loading the spelling map.
#[derive(Debug, thiserror::Error)]
pub enum NormalizerError {
    #[error("cannot read the spelling map {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the spelling map {} is not a JSON object of strings", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Port of `EnglishTextNormalizer` (english.py), including `EnglishSpellingNormalizer`.
pub struct EnglishTextNormalizer {
    spellings: HashMap<String, String>,
    numbers: EnglishNumberNormalizer,
    brackets: Regex,
    parentheses: Regex,
    ignore: BoundedRegex,
    space_before_apostrophe: Regex,
    replacers: Vec<(BoundedRegex, &'static str)>,
    digit_comma_digit: Regex,
    period: Regex,
    symbol_before_non_digit: Regex,
    percent_after_non_digit: Regex,
    whitespace: Regex,
}

/// `self.replacers` in `EnglishTextNormalizer.__init__`, in order. The flag says whether the
/// Python pattern starts with `\b`; all of them end with `\b`.
const REPLACERS: &[(bool, &str, &str)] = &[
    // common contractions
    (true, "won't", "will not"),
    (true, "can't", "can not"),
    (true, "let's", "let us"),
    (true, "ain't", "aint"),
    (true, "y'all", "you all"),
    (true, "wanna", "want to"),
    (true, "gotta", "got to"),
    (true, "gonna", "going to"),
    (true, "i'ma", "i am going to"),
    (true, "imma", "i am going to"),
    (true, "woulda", "would have"),
    (true, "coulda", "could have"),
    (true, "shoulda", "should have"),
    (true, "ma'am", "madam"),
    // contractions in titles/prefixes
    (true, "mr", "mister "),
    (true, "mrs", "missus "),
    (true, "st", "saint "),
    (true, "dr", "doctor "),
    (true, "prof", "professor "),
    (true, "capt", "captain "),
    (true, "gov", "governor "),
    (true, "ald", "alderman "),
    (true, "gen", "general "),
    (true, "sen", "senator "),
    (true, "rep", "representative "),
    (true, "pres", "president "),
    (true, "rev", "reverend "),
    (true, "hon", "honorable "),
    (true, "asst", "assistant "),
    (true, "assoc", "associate "),
    (true, "lt", "lieutenant "),
    (true, "col", "colonel "),
    (true, "jr", "junior "),
    (true, "sr", "senior "),
    (true, "esq", "esquire "),
    // perfect tenses, ideally it should be any past participles, but it's harder..
    (false, "'d been", " had been"),
    (false, "'s been", " has been"),
    (false, "'d gone", " had gone"),
    (false, "'s gone", " has gone"),
    (false, "'d done", " had done"), // "'s done" is ambiguous
    (false, "'s got", " has got"),
    // general contractions
    (false, "n't", " not"),
    (false, "'re", " are"),
    (false, "'s", " is"),
    (false, "'d", " would"),
    (false, "'ll", " will"),
    (false, "'t", " not"),
    (false, "'ve", " have"),
    (false, "'m", " am"),
];

impl EnglishTextNormalizer {
    /// Load the British→American spelling map (whisper's english.json) from `path`.
    pub fn from_spelling_file(path: &Path) -> Result<Self, NormalizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| NormalizerError::Read {
            path: path.to_owned(),
            source,
        })?;
        let map = serde_json::from_str(&text).map_err(|source| NormalizerError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::with_spelling_map(map))
    }

    /// Build with an explicit spelling map (tests use a small map, or the real file when present).
    pub fn with_spelling_map(map: HashMap<String, String>) -> Self {
        let replacers = REPLACERS
            .iter()
            .map(|&(leading, pattern, replacement)| (BoundedRegex::new(leading, &regex::escape(pattern)), replacement))
            .collect();
        Self {
            spellings: map,
            numbers: EnglishNumberNormalizer::new(),
            brackets: compile(r"[<\[][^>\]]*[>\]]"),
            parentheses: compile(r"\(([^)]+?)\)"),
            ignore: BoundedRegex::new(true, "hmm|mm|mhm|mmm|uh|um"),
            space_before_apostrophe: compile(&format!("{PY_SPACE}+'")),
            replacers,
            digit_comma_digit: compile(r"(\d),(\d)"),
            period: compile(r"\.([^0-9]|$)"),
            symbol_before_non_digit: compile(r"[.$¢€£]([^0-9])"),
            percent_after_non_digit: compile(r"([^0-9])%"),
            whitespace: compile(&format!("{PY_SPACE}+")),
        }
    }

    /// Port of `EnglishTextNormalizer.__call__`. The steps and their order are the Python's.
    pub fn normalize(&self, text: &str) -> String {
        let s = text.to_lowercase();

        let s = self.brackets.replace_all(&s, ""); // remove words between brackets
        let s = self.parentheses.replace_all(&s, ""); // remove words between parenthesis
        let s = self.ignore.replace_all(&s, |_| String::new());
        let s = self.space_before_apostrophe.replace_all(&s, "'"); // when there's a space before an apostrophe

        let mut s = s.into_owned();
        for (pattern, replacement) in &self.replacers {
            s = pattern.replace_all(&s, |_| (*replacement).to_owned());
        }

        let s = self.digit_comma_digit.replace_all(&s, "${1}${2}"); // remove commas between digits
        let s = self.period.replace_all(&s, " ${1}"); // remove periods not followed by numbers
        let s = remove_symbols_and_diacritics(&s, ".%$¢€£"); // keep numeric symbols

        let s = self.numbers.normalize(&s);
        let s = self.standardize_spellings(&s);

        // now remove prefix/suffix symbols that are not preceded/followed by numbers
        let s = self.symbol_before_non_digit.replace_all(&s, " ${1}");
        let s = self.percent_after_non_digit.replace_all(&s, "${1} ");

        // replace any successive whitespace characters with a space
        self.whitespace.replace_all(&s, " ").into_owned()
    }

    /// Port of `EnglishSpellingNormalizer.__call__`.
    fn standardize_spellings(&self, s: &str) -> String {
        py_split(s)
            .map(|word| self.spellings.get(word).map_or(word, String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalizer() -> EnglishTextNormalizer {
        // A few real entries of english.json; the full map is only available after setup.
        let map = [
            ("colour", "color"),
            ("centre", "center"),
            ("organise", "organize"),
            ("humour", "humor"),
            ("neighbour", "neighbor"),
        ];
        EnglishTextNormalizer::with_spelling_map(map.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    /// Expected strings produced by whisper 20250625's `EnglishTextNormalizer` (Python 3.11),
    /// with its spelling map replaced by the one in [`normalizer`].
    const PYTHON_REFERENCE: &[(&str, &str)] = &[
        ("twenty one", "21"),
        ("one hundred and five", "105"),
        ("two point five", "2.5"),
        ("nineteen eighty four", "1984"),
        ("one oh one", "101"),
        (
            "a hundred and twenty three thousand four hundred and fifty six",
            "a 123456",
        ),
        ("five hundred thousand", "500000"),
        ("1.5 million", "1500000"),
        ("double seven triple zero", "77000"),
        ("minus five degrees", "-5 degrees"),
        ("the year two thousand and twenty", "the year 2020"),
        (
            "one two three four five six seven eight nine zero one two three four five six seven eight nine zero one two three",
            "12345678901234567890123",
        ),
        ("five hundred decillion", "500000000000000000000000000000000000"),
        ("three and a half million", "3500000"),
        ("six and a half hours", "6.5 hours"),
        ("and a half", ""),
        ("zero point zero five", "0.05"),
        ("point seven five", ".75"),
        ("192.168.0.1", "192.168.0 one"),
        ("1,000,000 people", "1000000 people"),
        ("1.0 and 1.00", "one and one"),
        ("two thousands", "2000s"),
        ("one hundredth", "100th"),
        ("1st", "1st"),
        ("the 1990s", "the 1990s"),
        ("the 21st century", "the 21st century"),
        ("first second third fourth fifth", "1st 2nd 3rd 4th 5th"),
        ("twenty first", "21st"),
        ("ninth and nineth", "ninth and 9th"),
        ("the twenties and thirties", "the 20s and 30s"),
        ("5 th", "5th"),
        ("ones and twos", "ones and 2s"),
        ("$20 million", "$20000000"),
        ("5%", "5%"),
        ("fifty percent", "50%"),
        ("ten per cent", "10%"),
        ("ten per day", "10 per day"),
        ("two dollars and seven cents", "$2.07"),
        ("$2 and ¢7", "$2.07"),
        ("$0.05", "¢5"),
        ("€10 and €20", "€10 and €20"),
        ("five pounds", "£5"),
        ("one cent", " one"),
        ("won't", "will not"),
        ("y'all", "you all"),
        ("I'd've", "i would have"),
        ("it’s John’s", "it s john s"),
        (
            "I'm, you're, they've, we'll, she'd",
            "i am you are they have we will she would",
        ),
        (
            "he'd been, it's been, she's gone",
            "he had been it has been she has gone",
        ),
        (
            "can't ain't let's wanna gotta gonna i'ma woulda ma'am",
            "can not aint let us want to got to going to i am going to would have madam",
        ),
        ("Mr. Smith", "mister smith"),
        ("St. Louis", "saint louis"),
        ("Mrs. Dr. Prof. Capt. Jr.", "missus doctor professor captain junior"),
        ("john ' s", "john s"),
        ("um, uh, hmm, mm, mhm, mmm hello", "hello"),
        ("hmmm umm", "hmmm umm"),
        ("[laughs] hello (applause) <noise>", "hello"),
        ("a (b (c) d) e", "a d e"),
        ("café naïve", "cafe naive"),
        ("ŒUVRE Æsir Straße Łódź Þór", "oeuvre aesir strasse lodz thor"),
        ("ﬁnancial Ⅻ ² ½", "financial xii 2 one 2"),
        ("well-known state-of-the-art", "well known state of the art"),
        ("he said—no—she said", "he said no she said"),
        ("The U.S.A. is big.", "the u s a is big"),
        ("Call 555-1234 now!", "call 555 1234 now"),
        ("50/50 chance", "50 50 chance"),
        ("C++ and C#", "c and c"),
        ("e.g. i.e. etc.", "e g i e etc"),
        ("mm\u{301} mr\u{203f}", "mister"),
        ("hello\u{1c}world", "hello world"),
        ("٣ apples and ١.٥ million", "3 apples and one 5000000"),
        ("ΣΊΣΥΦΟΣ ΟΔΟΣ", "σισυφος οδος"),
        ("the colour of the centre", "the color of the center"),
        ("colours", "colours"),
        (
            "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS",
            "he hoped there would be stew for dinner turnips and carrots",
        ),
        (
            "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
            "and so my fellow americans ask not what your country can do for you ask what you can do for your country",
        ),
    ];

    #[test]
    fn matches_python_reference() {
        let n = normalizer();
        let mismatches: Vec<String> = PYTHON_REFERENCE
            .iter()
            .filter_map(|&(input, expected)| {
                let got = n.normalize(input);
                (got != expected).then(|| format!("{input:?}: expected {expected:?}, got {got:?}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn python_word_boundaries() {
        let n = normalizer();
        // Python tries the alternatives in order: "mm" fails its \b, "mmm" matches.
        assert_eq!(n.normalize("mmm yes"), "yes");
        // A combining mark is not a word character in Python (it is in the regex crate).
        assert_eq!(n.normalize("dr\u{301}"), "doctor");
        // Connector punctuation other than "_" is not one either.
        assert_eq!(n.normalize("st\u{203f}"), "saint");
        // But letters and numbers of any script are.
        assert_eq!(n.normalize("st\u{b2} st\u{3b1}"), "st 2 stα");
    }

    #[test]
    fn numbers_beyond_machine_integers() {
        let n = normalizer();
        assert_eq!(n.normalize("twelve decillion"), "12000000000000000000000000000000000");
        // As in Python, "thousand" multiplies only the last three digits: ...567000 + 890 * 1000.
        assert_eq!(
            n.normalize("123456789012345678901234567890 thousand and one"),
            "123456789012345678901235457001"
        );
    }

    #[test]
    fn natural_arithmetic() {
        let n = Natural::from_u64(1234);
        assert_eq!(n.rem_pow10(3), 234);
        assert_eq!(n.apply_multiplier(2).to_string(), "24400"); // 1000 + 234 * 100
        assert_eq!(Natural::pow10(3).add_u64(999).add_u64(1).to_string(), "2000");
        assert_eq!(Natural::from_digits([0, 0, 7]).to_string(), "7");
        assert!(Natural::from_digits([0, 0]).is_zero());
    }

    #[test]
    fn fractions_like_python() {
        let f = |s, k| fraction_times_pow10(s, k).map(|n| n.to_string());
        assert_eq!(f("1.5", 6).as_deref(), Some("1500000"));
        assert_eq!(f("1.50", 1).as_deref(), Some("15"));
        assert_eq!(f("1.55", 1), None); // not an integer
        assert_eq!(f(".5", 1).as_deref(), Some("5"));
        assert_eq!(f("5.", 0).as_deref(), Some("5"));
        assert_eq!(f("007", 0).as_deref(), Some("7"));
        assert_eq!(f("\u{663}\u{664}", 0).as_deref(), Some("34")); // Arabic-Indic digits
        assert_eq!(f(".", 2), None);
        assert_eq!(f("1.2.3", 6), None);
    }

    #[test]
    fn unicode_digit_values() {
        assert_eq!(decimal_digit_value('7'), Some(7));
        assert_eq!(decimal_digit_value('\u{669}'), Some(9)); // ARABIC-INDIC DIGIT NINE
        assert_eq!(decimal_digit_value('\u{1d7d9}'), Some(1)); // MATHEMATICAL DOUBLE-STRUCK ONE
        assert_eq!(decimal_digit_value('\u{b2}'), None); // superscript two is No, not Nd
        assert_eq!(decimal_digit_value('a'), None);
    }

    #[test]
    fn symbols_and_diacritics() {
        assert_eq!(
            remove_symbols_and_diacritics("Ça—va? 5€ œuvre", "€"),
            "Ca va  5€ oeuvre"
        );
        assert_eq!(remove_symbols("Ça—va? ﬁ"), "Ça va  fi");
    }

    #[test]
    fn loads_spelling_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("english.json");
        std::fs::write(&path, r#"{"colour": "color", "organise": "organize"}"#).expect("write");
        let n = EnglishTextNormalizer::from_spelling_file(&path).expect("valid map");
        assert_eq!(
            n.normalize("Organise the colours, colour!"),
            "organize the colours color"
        );
    }

    #[test]
    fn spelling_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.json");
        let err = EnglishTextNormalizer::from_spelling_file(&missing).err();
        assert!(matches!(err, Some(NormalizerError::Read { .. })));
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("missing.json"), "{message}");

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"colour": 1}"#).expect("write");
        let err = EnglishTextNormalizer::from_spelling_file(&bad).err();
        assert!(matches!(err, Some(NormalizerError::Parse { .. })));
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("bad.json"), "{message}");
    }

    /// The real map, as `models/provision` installs it.
    #[test]
    fn real_spelling_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/whisper-assets/english.json");
        assert!(
            path.exists(),
            "{} is missing: run `models/provision` first",
            path.display()
        );
        let n = EnglishTextNormalizer::from_spelling_file(&path).expect("english.json loads");
        assert_eq!(
            n.normalize("The neighbours' aeroplane, in grey colours."),
            "the neighbors airplane in gray colors"
        );
    }
}
