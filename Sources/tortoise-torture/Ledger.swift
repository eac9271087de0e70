import Foundation
import NIOConcurrencyHelpers
import TortoiseClient
import TortoiseProtocol

/// What the clients were told, for the final checks.
final class Ledger: Sendable {
    private struct State {
        var confirmedPuts = Set<UInt64>()
        var ackSent = Set<UInt64>()
        var ackConfirmed = Set<UInt64>()
        var nackErrors: [UInt64: Set<String>] = [:]
        var nackConfirmed = 0
        var requeues = 0
        var deliveries = 0
        var deliveredAfterAck: [UInt64] = []
        var replayed = 0
        var disconnects = 0
    }
    private let state = NIOLockedValueBox(State())

    func confirmedPut(_ id: UInt64) { state.withLockedValue { _ = $0.confirmedPuts.insert(id) } }
    func ackSent(_ id: UInt64) { state.withLockedValue { _ = $0.ackSent.insert(id) } }
    func nackSent(_ id: UInt64, _ error: String) { state.withLockedValue { _ = $0.nackErrors[id, default: []].insert(error) } }
    func replayed(_ n: Int) { state.withLockedValue { $0.replayed += n } }

    func delivered(_ id: UInt64) {
        state.withLockedValue { s in
            s.deliveries += 1
            if s.ackConfirmed.contains(id) { s.deliveredAfterAck.append(id) }
        }
    }

    func event(_ e: WorkerEvent) {
        state.withLockedValue { s in
            switch e {
            case .acknowledged(let id): s.ackConfirmed.insert(id)
            case .failed: s.nackConfirmed += 1
            case .requeued: s.requeues += 1
            case .disconnected: s.disconnects += 1
            default: break
            }
        }
    }

    var summary: String {
        state.withLockedValue { s in
            "puts confirmed \(s.confirmedPuts.count), deliveries \(s.deliveries), acks confirmed \(s.ackConfirmed.count), nacks confirmed \(s.nackConfirmed), requeues \(s.requeues), replayed \(s.replayed), worker reconnects \(s.disconnects)"
        }
    }

    /// The checks; each problem is a sentence.
    func check(stats: StatsReply, failed: FailedReply, client: TortoiseClient) async throws -> [String] {
        let s = state.withLockedValue { $0 }
        var problems: [String] = []
        let left = stats.queues.values.reduce(0) { $0 + $1.ready + $1.inflight + $1.delayed }
        if left > 0 { problems.append("\(left) tasks still ready, in flight or delayed after the drain") }
        if failed.tasks.count != failed.total { problems.append("FAILED returned \(failed.tasks.count) of \(failed.total)") }
        let failedIDs = Set(failed.tasks.map(\.id))
        // None lost: a confirmed put is now acked (confirmed, or an ACK that was sent when
        // the connection dropped and did take effect) or in the failed store.
        for id in s.confirmedPuts where !failedIDs.contains(id) && !s.ackConfirmed.contains(id) && !s.ackSent.contains(id) {
            problems.append("task \(id): PUT was confirmed, but it was never acked and is not in the failed store")
        }
        for id in s.deliveredAfterAck { problems.append("task \(id) was delivered again after its ACK got OK") }
        for id in failedIDs.intersection(s.ackConfirmed) { problems.append("task \(id) is in the failed store although its ACK got OK") }
        for t in failed.tasks {
            let given = s.nackErrors[t.id] ?? []
            if !given.contains(t.error) && !t.error.hasPrefix("delivery limit exceeded") {
                problems.append("task \(t.id) failed with '\(t.error)', which no worker gave")
            }
        }
        if failed.total != stats.queues.values.reduce(0, { $0 + $1.failed }) {
            problems.append("STATS counts \(stats.queues.values.reduce(0) { $0 + $1.failed }) failed, FAILED \(failed.total)")
        }
        // The indexes agree with a scan of the failed store.
        var queries = (0..<5).map { "kind\($0)" } + ["torture", "delivery limit", "queue:q1", "\"for task p1\"", "payload:n1", "since:1h"]
        if let g = failed.tasks.first?.group { queries.append("group:\(g)") }
        for q in queries {
            let got = Set(try await client.failed(q, limit: Wire.maxLimit).tasks.map(\.id))
            let want = Set(failed.tasks.filter { Self.matches(q, $0) }.map(\.id))
            if got != want { problems.append("query '\(q)': the index gives \(got.count) tasks, a scan \(want.count)") }
        }
        return problems
    }

    /// A scan's answer to the few query forms used above.
    static func matches(_ q: String, _ t: FailedTaskInfo) -> Bool {
        if q.hasPrefix("queue:") { return t.queue == String(q.dropFirst(6)) }
        if q.hasPrefix("group:") { return t.group == String(q.dropFirst(6)) }
        if q.hasPrefix("payload:") { return (t.payload ?? "").lowercased().contains(q.dropFirst(8).lowercased()) }
        if q == "since:1h" { return true }
        if q.hasPrefix("\"") { return t.error.lowercased().contains(q.dropFirst().dropLast().lowercased()) }
        let words = Set(ErrorWordsScan.words(t.error))
        return q.split(separator: " ").allSatisfy { words.contains(String($0).lowercased()) }
    }
}

/// The search's notion of a word, restated independently for the scan.
enum ErrorWordsScan {
    static func words(_ text: String) -> [String] {
        var out: [String] = []
        var cur = ""
        for c in text.unicodeScalars {
            if c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil { cur.unicodeScalars.append(c) } else if !cur.isEmpty { out.append(cur.lowercased()); cur = "" }
        }
        if !cur.isEmpty { out.append(cur.lowercased()) }
        return out
    }
}
