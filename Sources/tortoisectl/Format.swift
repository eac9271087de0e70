import Foundation
import TortoiseProtocol

/// Aligned tables and short texts for people.
enum Format {
    /// Columns padded to their widest cell; numbers right-aligned.
    static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                if i == cells.count - 1 && !rightAligned.contains(i) { return c }
                return rightAligned.contains(i) ? pad + c : c + pad
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    /// `text` on one line, cut to `max` characters with an ellipsis.
    static func clip(_ text: String, _ max: Int) -> String {
        let flat = text.map { $0.isNewline || $0 == "\t" ? " " : $0 }
        let s = String(flat)
        return s.count <= max ? s : String(s.prefix(max - 1)) + "…"
    }

    /// "12s ago", "3m ago", "2h ago", "5d ago" for an RFC 3339 time.
    static func ago(_ rfc3339: String, now: Date = Date()) -> String {
        guard let ms = WireTime.parse(rfc3339) else { return rfc3339 }
        let seconds = max(0, Int(now.timeIntervalSince1970 - Double(ms) / 1000))
        switch seconds {
        case ..<60: return "\(seconds)s ago"
        case ..<3600: return "\(seconds / 60)m ago"
        case ..<86400: return "\(seconds / 3600)h ago"
        default: return "\(seconds / 86400)d ago"
        }
    }

    /// A JSON document for scripts.
    static func json(_ value: some Encodable) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? e.encode(value)) ?? Data(), as: UTF8.self)
    }

    /// The failed-task table.
    static func failedTable(_ tasks: [FailedTaskInfo]) -> String {
        table(["ID", "QUEUE", "FAILED", "DELIVERIES", "REPLAYS", "ERROR", "PAYLOAD"], tasks.map { t in
            [String(t.id), t.queue, ago(t.failedAt), String(t.deliveries), String(t.replays),
             clip(t.error, 60), t.payload.map { clip($0, 40) } ?? "(\(t.payloadBase64?.count ?? 0) base64 chars)"]
        }, rightAligned: [0, 3, 4])
    }
}
