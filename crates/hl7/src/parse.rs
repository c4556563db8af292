//! A small, sans-IO HL7 v2 parser. It honours the encoding characters a
//! message declares in MSH-1 and MSH-2, accepts CR, LF or CRLF between
//! segments and a leading byte-order mark, and never panics: input it cannot
//! read is an [`Error::Parse`] naming where and why.
//!
//! Values are kept as sent and split lazily: a [`Value`] is a field, a
//! repetition, a component or a subcomponent, and [`Value::text`] decodes
//! the escape sequences (`\F\ \S\ \T\ \R\ \E\ \Xhh..\`) of that one value.

use std::borrow::Cow;

use crate::{Error, Result};

/// The characters that structure a message, as declared in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    /// MSH-2 may stop before the repetition, escape or subcomponent
    /// character; a message that does not declare one cannot use it.
    pub repetition: Option<char>,
    pub escape: Option<char>,
    pub subcomponent: Option<char>,
}

impl Default for Delimiters {
    /// `|^~\&`, what almost every sender declares.
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: Some('~'),
            escape: Some('\\'),
            subcomponent: Some('&'),
        }
    }
}

impl Delimiters {
    /// Reads MSH-1 and MSH-2 from the start of a message (`MSH|^~\&|…`).
    fn declared(text: &str) -> Result<(Self, &str)> {
        let problem = |problem: String| Error::parse("MSH-1", problem);
        let mut chars = text.char_indices().skip(3);
        let Some((_, field)) = chars.next() else {
            return Err(problem(
                "missing: the field separator must follow \"MSH\", e.g. \"MSH|^~\\&|\"".into(),
            ));
        };
        check_delimiter(field).map_err(problem)?;
        let rest = &text[3 + field.len_utf8()..];
        let declared = rest.split([field, '\r', '\n']).next().unwrap_or_default();
        let encoding: Vec<char> = declared.chars().collect();
        let problem = |problem: String| Error::parse("MSH-2", problem);
        if encoding.is_empty() || encoding.len() > 5 {
            return Err(problem(format!(
                "expected 1 to 5 encoding characters (component, repetition, escape, subcomponent, truncation) such as \"^~\\&\", got {declared:?}"
            )));
        }
        let mut seen = vec![field];
        for &c in &encoding {
            check_delimiter(c).map_err(problem)?;
            if seen.contains(&c) {
                return Err(problem(format!(
                    "{c:?} is declared twice among the delimiters {field}{declared}"
                )));
            }
            seen.push(c);
        }
        let delimiters = Self {
            field,
            component: encoding[0],
            repetition: encoding.get(1).copied(),
            escape: encoding.get(2).copied(),
            subcomponent: encoding.get(3).copied(),
        };
        Ok((delimiters, &rest[declared.len()..]))
    }

    /// MSH-2 as this set declares it (without a truncation character).
    pub fn encoding_characters(&self) -> String {
        [
            Some(self.component),
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .into_iter()
        .map_while(|c| c)
        .collect()
    }

    /// `text` with every delimiter in it escaped, ready to be a value of a
    /// message using these delimiters.
    pub fn escape(&self, text: &str) -> String {
        let Some(escape) = self.escape else {
            return text.to_owned();
        };
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            let code = if c == self.field {
                Some('F')
            } else if c == self.component {
                Some('S')
            } else if Some(c) == self.subcomponent {
                Some('T')
            } else if Some(c) == self.repetition {
                Some('R')
            } else if c == escape {
                Some('E')
            } else {
                None
            };
            match code {
                Some(code) => {
                    out.push(escape);
                    out.push(code);
                    out.push(escape);
                }
                // Segment separators cannot appear in a value.
                None if c == '\r' || c == '\n' => out.push(' '),
                None => out.push(c),
            }
        }
        out
    }
}

fn check_delimiter(c: char) -> std::result::Result<(), String> {
    if c.is_alphanumeric() || c.is_whitespace() || c.is_control() {
        return Err(format!(
            "{c:?} cannot be a delimiter: expected a printable symbol such as '|' or '^'"
        ));
    }
    Ok(())
}

/// One segment: its name and its fields as sent (not yet unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    name: String,
    /// `fields[n]` is field n (`fields[0]` is the name). For MSH, field 1
    /// is the field separator and field 2 the encoding characters, as the
    /// standard numbers them.
    fields: Vec<String>,
}

impl Segment {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of the last field present.
    pub fn len(&self) -> usize {
        self.fields.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment as sent, fields joined by the field separator.
    fn raw<'a>(&'a self, delimiters: &Delimiters) -> Cow<'a, str> {
        let separator = delimiters.field.to_string();
        if self.name == "MSH" {
            return Cow::Owned(format!(
                "MSH{separator}{}",
                self.fields[2..].join(&separator)
            ));
        }
        Cow::Owned(self.fields.join(&separator))
    }
}

/// A parsed message: its delimiters and segments, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    segments: Vec<Segment>,
}

impl Message {
    /// Parses one message. Bytes that are not UTF-8 are read as Latin-1
    /// (ISO 8859-1, the usual character set of older feeds), so any byte
    /// sequence can be parsed.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
        };
        Self::parse_str(&text)
    }

    pub fn parse_str(text: &str) -> Result<Self> {
        let text = text.trim_start_matches('\u{feff}').trim_start();
        if !text.starts_with("MSH") {
            let start: String = text.chars().take(12).collect();
            return Err(Error::parse(
                "MSH",
                format!("a message must start with an MSH segment, got {start:?}"),
            ));
        }
        let (delimiters, after_encoding) = Delimiters::declared(text)?;
        let mut segments = Vec::new();
        let mut lines = after_encoding.split(['\r', '\n']);
        // The rest of MSH, after MSH-2.
        let msh_rest = lines.next().unwrap_or_default();
        let mut msh = vec![
            "MSH".to_owned(),
            delimiters.field.to_string(),
            text[3 + delimiters.field.len_utf8()..text.len() - after_encoding.len()].to_owned(),
        ];
        if let Some(rest) = msh_rest.strip_prefix(delimiters.field) {
            msh.extend(rest.split(delimiters.field).map(str::to_owned));
        }
        segments.push(Segment {
            name: "MSH".into(),
            fields: msh,
        });
        for (index, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<String> = line.split(delimiters.field).map(str::to_owned).collect();
            let name = fields[0].as_str();
            let well_formed = name.len() == 3
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !well_formed {
                let start: String = line.chars().take(12).collect();
                return Err(Error::parse(
                    format!("segment {}", index + 2),
                    format!(
                        "expected a segment name of three capital letters or digits such as PID, got {start:?}"
                    ),
                ));
            }
            if name == "MSH" {
                return Err(Error::parse(
                    format!("segment {}", index + 2),
                    "a second MSH segment: send one message per MLLP frame (baton hl7 map and send split files at each MSH)",
                ));
            }
            segments.push(Segment {
                name: name.to_owned(),
                fields,
            });
        }
        Ok(Self {
            delimiters,
            segments,
        })
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Field `number` of `segment` (e.g. `field(segment, 3)` for PID-3);
    /// an empty value when the field is not there.
    pub fn field<'a>(&'a self, segment: &'a Segment, number: usize) -> Value<'a> {
        Value {
            raw: segment.fields.get(number).map_or("", String::as_str),
            delimiters: &self.delimiters,
            level: Level::Field,
        }
    }

    /// Field `number` of the first segment named `name`.
    pub fn get(&self, name: &str, number: usize) -> Value<'_> {
        match self.segment(name) {
            Some(segment) => self.field(segment, number),
            None => Value::empty(&self.delimiters),
        }
    }

    /// The message as text with CR between segments, as MLLP carries it.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments {
            text.push_str(&segment.raw(&self.delimiters));
            text.push('\r');
        }
        text
    }

    /// Every segment but MSH, as sent, joined by CR: the content that
    /// identifies what the message says, independent of the segment
    /// separators it was sent with.
    pub fn body_text(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments[1..] {
            text.push_str(&segment.raw(&self.delimiters));
            text.push('\r');
        }
        text
    }
}

/// Splits a file holding one or more messages (as interface engines dump
/// them: one after another, with or without blank lines or MLLP framing
/// bytes) into its messages: each segment line that starts with `MSH`
/// begins one.
pub fn split_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let clean: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == 0x0b || b == 0x1c { b'\r' } else { b })
        .collect();
    let mut at_line_start = true;
    let mut start = None;
    let mut i = 0;
    while i < clean.len() {
        let b = clean[i];
        if at_line_start {
            let rest = &clean[i..];
            let rest = rest.strip_prefix("\u{feff}".as_bytes()).unwrap_or(rest);
            if rest.starts_with(b"MSH") {
                if let Some(from) = start {
                    messages.push(clean[from..i].to_vec());
                }
                start = Some(i);
            }
        }
        at_line_start = b == b'\r' || b == b'\n';
        i += 1;
    }
    if let Some(from) = start {
        messages.push(clean[from..].to_vec());
    }
    messages
        .into_iter()
        .map(|mut m| {
            while m.last().is_some_and(|b| b.is_ascii_whitespace()) {
                m.pop();
            }
            m.push(b'\r');
            m
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Field,
    Repetition,
    Component,
    Subcomponent,
}

/// A field, repetition, component or subcomponent, as sent.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    raw: &'a str,
    delimiters: &'a Delimiters,
    level: Level,
}

impl<'a> Value<'a> {
    fn empty(delimiters: &'a Delimiters) -> Self {
        Self {
            raw: "",
            delimiters,
            level: Level::Field,
        }
    }

    fn child(&self, raw: &'a str, level: Level) -> Self {
        Self {
            raw,
            delimiters: self.delimiters,
            level,
        }
    }

    /// The value as sent, escapes and delimiters included.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True when nothing was sent, or only the HL7 null `""`.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty() || self.raw == "\"\""
    }

    /// The repetitions of a field (one, when it does not repeat).
    pub fn repetitions(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let this = *self;
        let parts: Box<dyn Iterator<Item = &'a str> + 'a> =
            match (self.level, self.delimiters.repetition) {
                (Level::Field, Some(repetition)) => Box::new(self.raw.split(repetition)),
                _ => Box::new(std::iter::once(self.raw)),
            };
        parts.map(move |raw| this.child(raw, Level::Repetition))
    }

    /// Component `number` (1-based) of the first repetition.
    pub fn component(&self, number: usize) -> Value<'a> {
        let repetition = match self.level {
            Level::Field => self.repetitions().next().unwrap_or(*self),
            _ => *self,
        };
        if repetition.level >= Level::Component {
            return if number == 1 {
                repetition
            } else {
                self.child("", Level::Subcomponent)
            };
        }
        let raw = repetition
            .raw
            .split(self.delimiters.component)
            .nth(number.saturating_sub(1))
            .filter(|_| number > 0)
            .unwrap_or_default();
        self.child(raw, Level::Component)
    }

    /// Subcomponent `number` (1-based) of the first component.
    pub fn subcomponent(&self, number: usize) -> Value<'a> {
        let component = match self.level {
            Level::Component => *self,
            Level::Subcomponent => {
                return if number == 1 {
                    *self
                } else {
                    self.child("", Level::Subcomponent)
                };
            }
            _ => self.component(1),
        };
        let raw = match self.delimiters.subcomponent {
            Some(subcomponent) => component
                .raw
                .split(subcomponent)
                .nth(number.saturating_sub(1))
                .filter(|_| number > 0)
                .unwrap_or_default(),
            None if number == 1 => component.raw,
            None => "",
        };
        self.child(raw, Level::Subcomponent)
    }

    /// The value with its escape sequences decoded, trimmed of surrounding
    /// spaces; the HL7 null `""` reads as empty.
    pub fn text(&self) -> Cow<'a, str> {
        if self.is_empty() {
            return Cow::Borrowed("");
        }
        match unescape(self.raw, self.delimiters) {
            Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
            Cow::Owned(text) => Cow::Owned(text.trim().to_owned()),
        }
    }

    /// The first component's first subcomponent, decoded: the code or id a
    /// coded or composite value starts with.
    pub fn first(&self) -> Cow<'a, str> {
        self.subcomponent(1).text()
    }
}

/// Decodes `\F\ \S\ \T\ \R\ \E\` and `\Xhh…\` (hex bytes, read as UTF-8 when
/// they are, else as Latin-1). Other sequences (`\H\`, `\.br\`, `\Zxx\`…)
/// and an unterminated escape are kept as sent.
pub fn unescape<'a>(raw: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let Some(escape) = delimiters.escape else {
        return Cow::Borrowed(raw);
    };
    if !raw.contains(escape) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + escape.len_utf8()..];
        let Some(end) = after.find(escape) else {
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let sequence = &after[..end];
        let decoded = match sequence {
            "F" => Some(delimiters.field.to_string()),
            "S" => Some(delimiters.component.to_string()),
            "T" => delimiters.subcomponent.map(String::from),
            "R" => delimiters.repetition.map(String::from),
            "E" => Some(escape.to_string()),
            _ => sequence.strip_prefix('X').and_then(decode_hex),
        };
        match decoded {
            Some(text) => out.push_str(&text),
            None => {
                out.push(escape);
                out.push_str(sequence);
                out.push(escape);
            }
        }
        rest = &after[end + escape.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn decode_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    Some(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => error.into_bytes().iter().map(|&b| char::from(b)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIT: &str = "MSH|^~\\&|PAS|RXX|BATON|BATON|20260329013000||ADT^A01^ADT_A01|MSG1|P|2.5\rEVN|A01|20260329013000\rPID|1||H123^^^RXX^MR~9434765919^^^NHS^NH||OKAFOR^GRACE||19400101|F\rPV1|1|I|WARD-7^B1^3^RXX01||||||||||||||||V1\r";

    #[test]
    fn reads_fields_components_and_repetitions() {
        let message = Message::parse_str(ADMIT).unwrap();
        assert_eq!(message.get("MSH", 1).raw(), "|");
        assert_eq!(message.get("MSH", 2).raw(), "^~\\&");
        assert_eq!(message.get("MSH", 3).text(), "PAS");
        assert_eq!(message.get("MSH", 9).component(2).text(), "A01");
        let ids: Vec<_> = message
            .get("PID", 3)
            .repetitions()
            .map(|r| {
                (
                    r.component(1).text().into_owned(),
                    r.component(5).text().into_owned(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("H123".to_owned(), "MR".to_owned()),
                ("9434765919".to_owned(), "NH".to_owned())
            ]
        );
        assert_eq!(message.get("PV1", 3).component(4).text(), "RXX01");
        assert_eq!(message.get("PV1", 19).text(), "V1");
        assert!(message.get("PV1", 99).is_empty());
        assert!(message.get("ZZZ", 1).is_empty());
    }

    #[test]
    fn honours_custom_delimiters() {
        let custom = ADMIT
            .replace('|', "#")
            .replace('^', "$")
            .replace('~', "%")
            .replace('\\', "^")
            .replace('&', "!");
        assert!(custom.starts_with("MSH#$%^!#PAS"));
        let message = Message::parse_str(&custom).unwrap();
        assert_eq!(message.delimiters().field, '#');
        assert_eq!(message.delimiters().escape, Some('^'));
        assert_eq!(message.get("MSH", 9).component(2).text(), "A01");
        assert_eq!(message.get("PID", 3).repetitions().count(), 2);
        assert_eq!(message.get("PID", 5).component(2).text(), "GRACE");
        // The escape character is '^' here: ^F^ is the field separator '#'.
        let escaped = custom.replace("OKAFOR", "O^F^K");
        let message = Message::parse_str(&escaped).unwrap();
        assert_eq!(message.get("PID", 5).component(1).text(), "O#K");
    }

    #[test]
    fn decodes_escapes_and_keeps_unknown_ones() {
        let d = Delimiters::default();
        assert_eq!(unescape(r"A\T\E \F\ \S\ \R\ \E\", &d), "A&E | ^ ~ \\");
        assert_eq!(unescape(r"caf\XC3A9\", &d), "café");
        assert_eq!(unescape(r"caf\XE9\", &d), "café", "Latin-1 when not UTF-8");
        assert_eq!(
            unescape(r"line\.br\two \H\bold\N\", &d),
            r"line\.br\two \H\bold\N\"
        );
        assert_eq!(unescape(r"odd\X1\ end\", &d), r"odd\X1\ end\");
        assert_eq!(unescape(r"unterminated \F", &d), r"unterminated \F");
        assert_eq!(d.escape("A&E|x^y~z\\"), r"A\T\E\F\x\S\y\R\z\E\");
        assert_eq!(unescape(&d.escape("A&E|x^y~z\\"), &d), "A&E|x^y~z\\");
    }

    #[test]
    fn accepts_every_segment_separator_and_a_byte_order_mark() {
        let cr = Message::parse_str(ADMIT).unwrap();
        for text in [
            ADMIT.replace('\r', "\n"),
            ADMIT.replace('\r', "\r\n"),
            format!("\u{feff}{ADMIT}"),
            format!("\r\n{}\n\n", ADMIT.replace('\r', "\r\n")),
        ] {
            let message = Message::parse_str(&text).unwrap();
            assert_eq!(message, cr, "{text:?}");
            assert_eq!(message.to_text(), ADMIT);
        }
        let mut bytes = vec![0xef, 0xbb, 0xbf];
        bytes.extend_from_slice(ADMIT.as_bytes());
        assert_eq!(Message::parse(&bytes).unwrap(), cr);
    }

    #[test]
    fn files_of_several_messages_split_at_each_msh() {
        let two = format!(
            "\u{feff}{ADMIT}\n\n\x0b{}\x1c\r",
            ADMIT.replace("MSG1", "MSG2")
        );
        let messages = split_messages(two.as_bytes());
        assert_eq!(messages.len(), 2);
        assert_eq!(
            Message::parse(&messages[0]).unwrap().get("MSH", 10).text(),
            "MSG1"
        );
        assert_eq!(
            Message::parse(&messages[1]).unwrap().get("MSH", 10).text(),
            "MSG2"
        );
        assert!(split_messages(b"no message here").is_empty());
    }

    #[test]
    fn empty_and_null_fields_read_as_empty() {
        let message =
            Message::parse_str("MSH|^~\\&|PAS||||||ADT^A08|1|P|2.5\rPID|1||||\"\"^^||||\r")
                .unwrap();
        assert!(message.get("MSH", 4).is_empty());
        assert!(message.get("PID", 5).component(1).is_empty());
        assert_eq!(message.get("PID", 5).component(1).text(), "");
        assert_eq!(message.get("PID", 2).subcomponent(3).text(), "");
    }

    #[test]
    fn subcomponents_split_within_a_component() {
        let message = Message::parse_str("MSH|^~\\&|A\rPID|1||X^^^test1&2.16.1&HCD^MR\r").unwrap();
        let authority = message.get("PID", 3).component(4);
        assert_eq!(authority.subcomponent(1).text(), "test1");
        assert_eq!(authority.subcomponent(3).text(), "HCD");
        assert_eq!(authority.subcomponent(4).text(), "");
        assert_eq!(message.get("PID", 3).first(), "X");
    }

    #[test]
    fn garbage_is_an_error_naming_the_problem() {
        for (input, expected) in [
            ("", "must start with an MSH segment"),
            ("PID|1", "must start with an MSH segment"),
            ("MSH", "field separator must follow"),
            ("MSHA^~\\&|", "cannot be a delimiter"),
            ("MSH||", "MSH-2"),
            ("MSH|^^~|", "declared twice"),
            ("MSH|^~\\&|A\rpid|1", "segment 2"),
            ("MSH|^~\\&|A\rPI|1", "three capital letters"),
            ("MSH|^~\\&|A\rMSH|^~\\&|B", "a second MSH"),
        ] {
            let error = Message::parse_str(input).unwrap_err().to_string();
            assert!(error.contains(expected), "{input:?}: {error}");
        }
        assert!(Message::parse(&[0xff, 0xfe, 0x00, 0x4d]).is_err());
    }

    #[test]
    fn truncated_messages_still_parse_what_is_there() {
        let message = Message::parse_str("MSH|^~\\&").unwrap();
        assert_eq!(message.segments().len(), 1);
        assert!(message.get("MSH", 9).is_empty());
        let message = Message::parse_str("MSH|^~\\&|PAS|RXX|").unwrap();
        assert_eq!(message.get("MSH", 4).text(), "RXX");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_input(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut input = b"MSH|^~\\&|".to_vec();
            input.extend_from_slice(&bytes);
            if let Ok(message) = Message::parse(&input) {
                for segment in message.segments() {
                    for n in 0..=segment.len() + 1 {
                        let value = message.field(segment, n);
                        let _ = value.text();
                        for repetition in value.repetitions() {
                            let _ = repetition.component(2).subcomponent(2).text();
                        }
                    }
                }
                let again = Message::parse_str(&message.to_text()).unwrap();
                proptest::prop_assert_eq!(again, message);
            }
            let _ = Message::parse(&bytes);
        }
    }
}
