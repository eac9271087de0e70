import TortoiseStorage

/// Parses the query language of `FAILED`, `REPLAY`, `DELETE` and `ERRORS` (see
/// PROTOCOL.md): terms separated by spaces, all of which must match.
public enum QueryParser {
    /// The fields a `field:value` term may name.
    public static let fields = ["queue", "id", "since", "before", "payload", "group"]

    /// Parses `text`; `now` resolves ages like `since:2h`. Errors say where and what.
    public static func parse(_ text: String, now: Millis) -> Result<FailedQuery, ProtocolError> {
        var query = FailedQuery()
        let chars = Array(text)
        var i = 0
        func fail(_ at: Int, _ what: String) -> Result<FailedQuery, ProtocolError> {
            .failure(ProtocolError(.badArgument, "query error at character \(at + 1): \(what)"))
        }
        /// Reads a quoted text starting at the quote; returns it and the index after it.
        func quoted(_ start: Int) -> (String, Int)? {
            var j = start + 1
            var out = ""
            while j < chars.count {
                let c = chars[j]
                if c == "\\", j + 1 < chars.count { out.append(chars[j + 1]); j += 2; continue }
                if c == "\"" { return (out, j + 1) }
                out.append(c)
                j += 1
            }
            return nil
        }
        while i < chars.count {
            if chars[i] == " " || chars[i] == "\t" || chars[i] == "\n" || chars[i] == "\r" { i += 1; continue }
            let start = i
            if chars[i] == "\"" {
                guard let (phrase, end) = quoted(i) else { return fail(start, "unclosed quote") }
                guard !phrase.isEmpty else { return fail(start, "empty phrase \"\"") }
                query.phrases.append(phrase.lowercased())
                i = end
                continue
            }
            // A bare term runs to the next space; a field's value may be quoted.
            var j = i
            while j < chars.count, chars[j] != " ", chars[j] != ":" , chars[j] != "\"" { j += 1 }
            if j < chars.count, chars[j] == ":" {
                let field = String(chars[i..<j])
                guard fields.contains(field) else {
                    return fail(start, "unknown field '\(field)'; fields are \(fields.joined(separator: ", "))")
                }
                var value: String
                var end: Int
                if j + 1 < chars.count, chars[j + 1] == "\"" {
                    guard let (v, e) = quoted(j + 1) else { return fail(j + 1, "unclosed quote") }
                    value = v
                    end = e
                } else {
                    end = j + 1
                    while end < chars.count, chars[end] != " " { end += 1 }
                    value = String(chars[(j + 1)..<end])
                }
                guard !value.isEmpty else { return fail(start, "'\(field):' needs a value") }
                switch field {
                case "queue":
                    guard Wire.isValidName(value) else { return fail(j + 1, "queue: '\(value)' is not a valid queue name") }
                    query.queues.append(value)
                case "id":
                    guard let id = TaskID(value), value.allSatisfy(\.isNumber) else { return fail(j + 1, "id: '\(value)' is not a task id") }
                    query.ids.append(id)
                case "since", "before":
                    let t: Millis
                    if let d = WireTime.parseDuration(value) {
                        t = now - d
                    } else if let abs = WireTime.parse(value) {
                        t = abs
                    } else {
                        return fail(j + 1, "\(field): '\(value)' is neither an RFC 3339 time nor an age like 90s, 30m, 2h, 7d")
                    }
                    if field == "since" { query.since = max(query.since ?? t, t) } else { query.before = min(query.before ?? t, t) }
                case "payload":
                    query.payloadTexts.append(value.lowercased())
                default:
                    guard let g = ErrorFingerprint.parseHex(value) else { return fail(j + 1, "group: '\(value)' is not a group (16 hex digits)") }
                    query.groups.append(g)
                }
                i = end
                continue
            }
            while j < chars.count, chars[j] != " " {
                if chars[j] == "\"" { return fail(j, "a quote must start a term or follow 'field:'") }
                j += 1
            }
            let term = String(chars[i..<j])
            let words = ErrorWords.words(term)
            if words.count == 1, words[0] == term.lowercased() {
                query.words.append(words[0])
            } else {
                // "time-out": every word, and the exact text.
                query.words.append(contentsOf: words)
                query.phrases.append(term.lowercased())
            }
            i = j
        }
        return .success(query)
    }
}
