//! The message as read: one pass of serde_json's parser into [`Node`]s whose
//! strings borrow from the message bytes (copied only when they hold escapes).
//!
//! This is what the dialect decoders take fields from. Unlike a
//! `serde_json::Value` tree it allocates no key and no string: an object is
//! one `Vec` of `(key, value)` pairs. Only the fields that have no canonical
//! home become `serde_json::Value`s (the event's `attributes`), and only at
//! the end.
//!
//! An [`Obj`] behaves like the `serde_json::Map` the decoder used to parse
//! into (a `BTreeMap`): keys are unique (a repeated key keeps its last value)
//! and are listed, iterated and serialized in byte order, so error texts that
//! list keys or quote values read the same. It is stored in document order,
//! unsorted: lookups are by a key bitmask and a short linear scan.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// One JSON value of a message.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Obj<'a>),
}

/// A JSON object: unique keys in byte order (see the module docs).
#[derive(Debug, Clone, Default)]
pub(super) struct Obj<'a> {
    entries: Vec<(Cow<'a, str>, Node<'a>)>,
    /// One bit per key ever held ([`key_bit`]): most lookups are for aliases
    /// the object does not have, and a clear bit answers those at once.
    /// Bits are not cleared when a key is taken (a set bit only means "look").
    mask: u64,
}

/// Equal when they hold the same keys and values, in whatever order.
impl PartialEq for Obj<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// The bit of `key` in [`Obj::mask`], from its length and last byte.
pub(super) const fn key_bit(key: &str) -> u64 {
    let b = key.as_bytes();
    let last = if b.is_empty() {
        0
    } else {
        b[b.len() - 1] as u32
    };
    1 << ((b.len() as u32 * 5 + last) & 63)
}

/// Parses one JSON text. The errors are serde_json's, with line and column.
///
/// Messages are read by [`Scanner`], which knows only the JSON producers
/// usually write (no escapes, integers of up to 18 digits); anything else,
/// including every error, is read again by serde_json, so the result is
/// always serde_json's.
pub(super) fn parse(bytes: &[u8]) -> Result<Node<'_>, serde_json::Error> {
    // Checking the whole text once is cheaper than checking each string;
    // text that is not UTF-8 gets serde_json's own error.
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_text(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// [`parse`] of text already checked as UTF-8.
pub(super) fn parse_text(text: &str) -> Result<Node<'_>, serde_json::Error> {
    match Scanner::new(text).document() {
        Some(node) => Ok(node),
        None => serde_json::from_str(text),
    }
}

/// A JSON reader for the common case: `None` as soon as the text holds
/// anything it does not handle (an escape, a control character in a string,
/// a fraction or exponent, a long integer, deep nesting, an error); [`parse`]
/// then asks serde_json.
#[derive(Clone)]
pub(super) struct Scanner<'a> {
    text: &'a str,
    at: usize,
    depth: u32,
}

/// Deeper than this goes to serde_json (whose limit is 128).
const SCANNER_MAX_DEPTH: u32 = 64;

impl<'a> Scanner<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Scanner {
            text,
            at: 0,
            depth: 0,
        }
    }

    fn document(mut self) -> Option<Node<'a>> {
        let node = self.value()?;
        self.skip_ws();
        (self.at == self.text.len()).then_some(node)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// The next byte that is not white space, skipped to.
    pub(super) fn next_token(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek()
    }

    /// Moves past the byte [`Scanner::next_token`] returned.
    pub(super) fn advance(&mut self) {
        self.at += 1;
    }

    /// Whether only white space is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.at == self.text.len()
    }

    fn skip_ws(&mut self) {
        let bytes = self.text.as_bytes();
        // Compact JSON has none: one comparison answers most calls.
        if bytes.get(self.at).is_none_or(|&b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Any value; `None` for one it leaves to serde_json.
    pub(super) fn value(&mut self) -> Option<Node<'a>> {
        self.skip_ws();
        match self.peek()? {
            b'"' => self.string().map(|s| Node::Str(Cow::Borrowed(s))),
            b'{' => self.object(),
            b'[' => self.array(),
            b't' => self.literal("true", Node::Bool(true)),
            b'f' => self.literal("false", Node::Bool(false)),
            b'n' => self.literal("null", Node::Null),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    /// A value that is not an object or array; `None` for those, too.
    pub(super) fn scalar(&mut self) -> Option<Node<'a>> {
        match self.next_token()? {
            b'{' | b'[' => None,
            _ => self.value(),
        }
    }

    /// A string without escapes or control characters, borrowed (the
    /// scanner is on its opening quote).
    #[inline(always)]
    pub(super) fn string(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.at + 1;
        let end = start + plain_string_len(bytes.get(start..)?)?;
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// The string value at the next token, borrowed; `None` for any other
    /// value (read without a [`Node`]: one returned through the stack and
    /// matched at once stalled the loads that read it back).
    pub(super) fn string_value(&mut self) -> Option<&'a str> {
        if self.next_token()? != b'"' {
            return None;
        }
        self.string()
    }

    /// The integer value at the next token as its text, which for the
    /// integers the scanner reads (no `-0`, no leading zero) is what
    /// serde_json's `Number` writes; `None` for any other value.
    pub(super) fn integer_text(&mut self) -> Option<&'a str> {
        let start = self.at;
        let (end, _) = integer_at(self.text.as_bytes(), start)?;
        self.at = end;
        self.delimited()
            .then(|| self.text.get(start..end))
            .flatten()
    }

    /// The boolean value at the next token; `None` for any other value.
    pub(super) fn bool_value(&mut self) -> Option<bool> {
        match self.next_token()? {
            b't' => self.literal("true", true),
            b'f' => self.literal("false", false),
            _ => None,
        }
    }

    /// `value` when the text at the scanner is `word`, ending a value.
    fn literal<T>(&mut self, word: &str, value: T) -> Option<T> {
        let rest = self.text.get(self.at..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.at += word.len();
        self.delimited().then_some(value)
    }

    /// Whether a value may end here (serde_json decides anything else).
    fn delimited(&self) -> bool {
        ends_value(self.text.as_bytes().get(self.at))
    }

    /// `-?(0|[1-9][0-9]*)` of up to 18 digits: what serde_json reads as a
    /// `u64` (or, negative, an `i64`).
    fn integer(&mut self) -> Option<Node<'a>> {
        let (end, number) = integer_at(self.text.as_bytes(), self.at)?;
        self.at = end;
        self.delimited().then_some(Node::Num(number))
    }

    fn array(&mut self) -> Option<Node<'a>> {
        self.enter()?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
        } else {
            loop {
                items.push(self.value()?);
                self.skip_ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(Node::Arr(items))
    }

    fn object(&mut self) -> Option<Node<'a>> {
        self.enter()?;
        let mut entries = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            entries = Vec::with_capacity(8);
            loop {
                self.skip_ws();
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                if entries.is_empty() && key == RAW_VALUE_TOKEN {
                    return None;
                }
                self.skip_ws();
                if self.peek()? != b':' {
                    return None;
                }
                self.at += 1;
                self.skip_ws();
                // A string value (most are) is pushed as it is read, not
                // returned from `value` first: copying the returned `Node`
                // through the stack stalled (8-byte stores read back with
                // 16-byte loads, in perf the parser's hottest instruction).
                let key = Cow::Borrowed(key);
                if self.peek()? == b'"' {
                    let text = self.string()?;
                    entries.push((key, Node::Str(Cow::Borrowed(text))));
                } else {
                    let value = self.value()?;
                    entries.push((key, value));
                }
                self.skip_ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(Node::Obj(Obj::from_pairs(entries)))
    }

    /// Opens an object or array; too deep is serde_json's.
    fn enter(&mut self) -> Option<()> {
        self.at += 1;
        self.depth += 1;
        (self.depth <= SCANNER_MAX_DEPTH).then_some(())
    }
}

/// The integer starting at `at`, `-?(0|[1-9][0-9]*)` of up to 18 digits
/// (what serde_json reads as a `u64`, or negative an `i64`), and where it
/// ends; `None` for anything else ("-0", leading zeros, long numbers), which
/// is serde_json's to read.
#[inline]
fn integer_at(bytes: &[u8], at: usize) -> Option<(usize, Number)> {
    let negative = *bytes.get(at)? == b'-';
    let start = at + usize::from(negative);
    let digits = bytes
        .get(start..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 18 || (bytes[start] == b'0' && (digits > 1 || negative)) {
        return None;
    }
    let value = bytes[start..start + digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let number = if negative {
        Number::from(-(value as i64))
    } else {
        Number::from(value)
    };
    Some((start + digits, number))
}

/// Whether a value may end before `next` (serde_json decides anything else).
#[inline]
fn ends_value(next: Option<&u8>) -> bool {
    matches!(
        next,
        None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
    )
}

/// The length of the string whose body starts `bytes`, when it ends at a
/// `"` with no escape or control character before it (`None` otherwise).
/// Strings are short: sixteen bytes at a time where SSE2 is (every x86-64),
/// then eight, without a call.
#[inline(always)]
pub(super) fn plain_string_len(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The bytes of `w` that are zero; exact for the lowest one, which is
    // all that is used (higher ones may be false after a true one).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    #[cfg(target_arch = "x86_64")]
    let mut i = {
        let mut i = 0;
        while let Some(mask) = stops16(bytes, i) {
            if mask != 0 {
                let at = i + mask.trailing_zeros() as usize;
                return (bytes[at] == b'"').then_some(at);
            }
            i += 16;
        }
        i
    };
    #[cfg(not(target_arch = "x86_64"))]
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let stops = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            // bytes below 0x20 (the same trick, exact for the lowest)
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if stops != 0 {
            let at = i + (stops.trailing_zeros() / 8) as usize;
            return (bytes[at] == b'"').then_some(at);
        }
        i += 8;
    }
    for (at, &b) in bytes.iter().enumerate().skip(i) {
        match b {
            b'"' => return Some(at),
            b'\\' | 0..=0x1f => return None,
            _ => {}
        }
    }
    None
}

/// A bit for each of the sixteen bytes at `at` that ends a plain string
/// (`"`, `\\`, a control character), or `None` when fewer than sixteen are
/// left.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stops16(bytes: &[u8], at: usize) -> Option<u32> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let chunk: &[u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    // SAFETY: SSE2 is part of x86-64, and the load reads the sixteen bytes
    // of `chunk` (unaligned loads allowed).
    let mask = unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let escape = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // v <= 0x1f (unsigned): min(v, 0x1f) == v
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, escape), control))
    };
    Some(mask as u32)
}

/// Parses JSON held in a string or decoded bytes of the message (CloudEvents
/// `data` as a string, `data_base64`): the result owns its strings.
pub(super) fn parse_owned(bytes: &[u8]) -> Result<Node<'static>, serde_json::Error> {
    parse(bytes).map(Node::into_owned)
}

impl<'a> Node<'a> {
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value` (for `attributes` and `changes`).
    pub(super) fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Num(n) => Value::Number(n),
            Node::Str(s) => Value::String(s.into_owned()),
            Node::Arr(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Obj(obj) => Value::Object(obj.into_map()),
        }
    }

    pub(super) fn into_owned(self) -> Node<'static> {
        match self {
            Node::Null => Node::Null,
            Node::Bool(b) => Node::Bool(b),
            Node::Num(n) => Node::Num(n),
            Node::Str(s) => Node::Str(Cow::Owned(s.into_owned())),
            Node::Arr(items) => Node::Arr(items.into_iter().map(Node::into_owned).collect()),
            Node::Obj(obj) => Node::Obj(Obj {
                entries: obj
                    .entries
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
                mask: obj.mask,
            }),
        }
    }
}

impl<'a> Obj<'a> {
    pub(super) fn new() -> Self {
        Obj {
            entries: Vec::new(),
            mask: 0,
        }
    }

    /// From pairs in document order; a repeated key keeps its last value, as
    /// in a `serde_json::Map`.
    fn from_pairs(mut entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Self {
        let mut mask = 0;
        let mut maybe_repeated = false;
        for (k, _) in &entries {
            let bit = key_bit(k);
            maybe_repeated |= mask & bit != 0;
            mask |= bit;
        }
        if maybe_repeated && has_repeats(&entries) {
            // Stable: of equal keys the last written comes last.
            entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
            entries.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    std::mem::swap(&mut later.1, &mut kept.1);
                    true
                } else {
                    false
                }
            });
        }
        Obj { entries, mask }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The [`key_bit`]s of the keys it holds (and may have held).
    pub(super) fn mask(&self) -> u64 {
        self.mask
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys in the order they were added.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    /// The keys in byte order (as a `serde_json::Map` lists them).
    pub(super) fn sorted_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.keys().collect();
        keys.sort_unstable();
        keys
    }

    /// The entries in key order.
    fn sorted(&self) -> Vec<&(Cow<'a, str>, Node<'a>)> {
        let mut entries: Vec<_> = self.entries.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// Where `key` is. Most lookups are for aliases the object does not
    /// have: the mask answers those, and lengths are compared before bytes.
    fn find(&self, key: &str) -> Option<usize> {
        if self.mask & key_bit(key) == 0 {
            return None;
        }
        self.entries
            .iter()
            .position(|(k, _)| k.len() == key.len() && k.as_bytes() == key.as_bytes())
    }

    pub(super) fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.find(key).map(|i| &self.entries[i].1)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Removes `key` and returns its value.
    pub(super) fn take(&mut self, key: &str) -> Option<Node<'a>> {
        let i = self.find(key)?;
        Some(self.entries.swap_remove(i).1)
    }

    /// Sets `key` (replacing its value if present).
    pub(super) fn insert(&mut self, key: Cow<'a, str>, value: Node<'a>) {
        match self.find(&key) {
            Some(i) => self.entries[i].1 = value,
            None => {
                self.mask |= key_bit(&key);
                if self.entries.capacity() == 0 {
                    // Room for a CloudEvent's own keys at once (a first
                    // push would make room for 4, then grow to 8).
                    self.entries.reserve_exact(8);
                }
                self.entries.push((key, value));
            }
        }
    }

    /// Adds the entries of `from` whose keys are absent here.
    pub(super) fn merge(&mut self, from: Obj<'a>) {
        if from.entries.is_empty() {
            return;
        }
        if self.entries.is_empty() {
            *self = from;
            return;
        }
        if self.entries.len() * from.entries.len() <= 1024 {
            for (k, v) in from.entries {
                self.insert_absent(k, v);
            }
            return;
        }
        // Two large objects: sort both and merge in one pass.
        self.mask |= from.mask;
        let mut ours = std::mem::take(&mut self.entries);
        ours.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut theirs = from.entries;
        theirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut merged = Vec::with_capacity(ours.len() + theirs.len());
        let mut theirs = theirs.into_iter().peekable();
        for entry in ours {
            while let Some(next) = theirs.next_if(|t| t.0 < entry.0) {
                merged.push(next);
            }
            theirs.next_if(|t| t.0 == entry.0);
            merged.push(entry);
        }
        merged.extend(theirs);
        self.entries = merged;
    }

    fn insert_absent(&mut self, key: Cow<'a, str>, value: Node<'a>) {
        if self.find(&key).is_none() {
            self.mask |= key_bit(&key);
            self.entries.push((key, value));
        }
    }

    pub(super) fn into_map(self) -> Map<String, Value> {
        let entries = self.entries.into_iter();
        if entries.len() > 8 {
            return entries
                .map(|(k, v)| (k.into_owned(), v.into_value()))
                .collect();
        }
        // Keys are unique: inserting the few there usually are one by one
        // skips the sorted copy that collecting into a `BTreeMap` makes.
        let mut map = Map::new();
        for (k, v) in entries {
            map.insert(k.into_owned(), v.into_value());
        }
        map
    }
}

/// Whether two entries have the same key.
fn has_repeats(entries: &[(Cow<'_, str>, Node<'_>)]) -> bool {
    if entries.len() > 32 {
        let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        return keys.windows(2).any(|w| w[0] == w[1]);
    }
    entries
        .iter()
        .enumerate()
        .any(|(i, (k, _))| entries[..i].iter().any(|(earlier, _)| earlier == k))
}

impl<'a> IntoIterator for Obj<'a> {
    type Item = (Cow<'a, str>, Node<'a>);
    type IntoIter = std::vec::IntoIter<(Cow<'a, str>, Node<'a>)>;

    /// In key order.
    fn into_iter(mut self) -> Self::IntoIter {
        self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.entries.into_iter()
    }
}

// ---------------------------------------------------------------- serde

/// Writes the JSON text a `serde_json::Value` of the same content would (for
/// the value snippets of error messages).
impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Num(n) => n.serialize(s),
            Node::Str(v) => s.serialize_str(v),
            Node::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Obj(obj) => {
                let mut map = s.serialize_map(Some(obj.entries.len()))?;
                for (k, v) in obj.sorted() {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Builds nodes the way `serde_json::Value`'s visitor builds values (numbers,
/// NaN-free floats, its raw-value key), except that strings borrow.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Num(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Num(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Num))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(Node::Obj(Obj::new()));
        };
        if first == RAW_VALUE_TOKEN {
            // serde_json (with its `raw_value` feature, which this workspace
            // enables) reads such an object as the JSON inside the string.
            let text = map.next_value_seed(RawString)?;
            return parse_owned(text.as_bytes()).map_err(de::Error::custom);
        }
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        entries.push((first, map.next_value()?));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Obj(Obj::from_pairs(entries)))
    }
}

/// The key serde_json's `Value` treats as a raw-value marker.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// An object key, borrowed when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The string value of a raw-value marker (serde_json's `BoxedFromString`).
struct RawString;

impl<'de> DeserializeSeed<'de> for RawString {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for RawString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("raw value")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Result<Value, String>, Result<Value, String>) {
        let value = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
        let node = parse(text.as_bytes())
            .map(Node::into_value)
            .map_err(|e| e.to_string());
        (value, node)
    }

    /// The vector and word loops stop where a byte-at-a-time reader does,
    /// with the stop at every place of strings of every length up to 40,
    /// and any bytes after it.
    #[test]
    fn plain_string_len_stops_where_a_byte_reader_does() {
        fn reference(bytes: &[u8]) -> Option<usize> {
            for (at, &b) in bytes.iter().enumerate() {
                match b {
                    b'"' => return Some(at),
                    b'\\' | 0..=0x1f => return None,
                    _ => {}
                }
            }
            None
        }
        let mut checked = 0;
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'a'] {
                for at in 0..=len {
                    let mut bytes = vec![b'x'; len];
                    if at < len {
                        bytes[at] = stop;
                    }
                    for tail in [&b""[..], b"\"", b"\\\"", b"\x01", b"xxxxxxxxxxxxxxxxxxxx\""] {
                        let mut all = bytes.clone();
                        all.extend_from_slice(tail);
                        assert_eq!(plain_string_len(&all), reference(&all), "{all:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 30_000, "{checked}");
    }

    #[test]
    fn reads_like_serde_json_value() {
        for text in [
            r#"{"b": 1, "a": [true, null, -2, 1.5, 18446744073709551615, 1e400], "c": {"x": "é\n"}}"#,
            r#"{"k": 1, "k": 2, "j": 0, "k": 3}"#,
            r#"{"\u0041": "\ud83d\ude00", "A": "dup"}"#,
            r#"{"$serde_json::private::RawValue": "[1, 2]"}"#,
            r#"{"$serde_json::private::RawValue": 5}"#,
            r#"{"a": 1,}"#,
            r#"[1, 2"#,
            r#""\x""#,
            "{} x",
            "1e999999",
            "-0",
            "123456789012345678901234567890",
            r#"{"a": [1, -2, 0, -0, 12.5, 1e3, 999999999999999999, 9999999999999999999]}"#,
            r#"{"n": -9223372036854775808, "m": 18446744073709551615, "o": 01}"#,
            r#" { "t" : true , "f":false,"n" :null, "e": {}, "l": [ ] , "s": "a\"b" } "#,
            r#"{"x": truex}"#,
            r#"{"x": nul}"#,
            r#"{"x": "tab	in string"}"#,
            r#"{"x": [1,]}"#,
            r#"{"x": 1 "y": 2}"#,
            r#"{"x" 1}"#,
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
            "{\"a\": 1}\u{b}",
            // Strings longer than a word, stops at each place in one.
            r#"{"a key longer than eight bytes": "a value longer than eight bytes"}"#,
            r#"{"0123456789abcdef": "01234567\"89", "k": "0123456\\n"}"#,
            "{\"0123456789\": \"0123456789ab\u{1f}cd\"}",
            "{\"0123456789\": \"01234567\u{7f}\u{0}\"}",
            r#"{"ééééé": "日本語のテキスト", "x": "ü\u00fc"}"#,
            r#"{"unterminated": "0123456789"#,
            "",
            "  ",
        ] {
            let (value, node) = both(text);
            assert_eq!(node, value, "{text}");
        }
    }

    #[test]
    fn strings_without_escapes_borrow() {
        let text = r#"{"key": "plain", "esc\"aped": "a\tb"}"#;
        let Node::Obj(obj) = parse(text.as_bytes()).unwrap() else {
            panic!("an object")
        };
        let pairs: Vec<_> = obj.into_iter().collect();
        assert!(matches!(&pairs[0].0, Cow::Owned(k) if k == "esc\"aped"));
        assert!(matches!(&pairs[0].1, Node::Str(Cow::Owned(_))));
        assert!(matches!(&pairs[1].0, Cow::Borrowed("key")));
        assert!(matches!(&pairs[1].1, Node::Str(Cow::Borrowed("plain"))));
    }

    #[test]
    fn objects_serialize_and_edit_like_a_map() {
        let text = r#"{"b": {"z": 1, "y": [2, "x"]}, "a": null, "b2": "\u00e9"}"#;
        let node = parse(text.as_bytes()).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        let Node::Obj(mut obj) = node else {
            panic!("an object")
        };
        assert_eq!(obj.sorted_keys(), ["a", "b", "b2"]);
        assert!(obj.take("b").is_some());
        assert!(obj.take("b").is_none());
        obj.insert(Cow::Borrowed("0"), Node::Bool(true));
        obj.insert(Cow::Borrowed("a"), Node::Bool(false));
        let mut other = Obj::new();
        other.insert(Cow::Borrowed("a"), Node::Null);
        other.insert(Cow::Borrowed("c"), Node::Null);
        obj.merge(other);
        assert_eq!(
            Value::Object(obj.into_map()),
            serde_json::json!({"0": true, "a": false, "b2": "é", "c": null})
        );
    }
}
