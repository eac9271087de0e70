/// A search over the failed store: every term must match (see PROTOCOL.md, "Query
/// language"). The protocol module parses the text form; this is what the store runs.
public struct FailedQuery: Sendable, Equatable {
    /// Whole words the error must contain, case-folded.
    public var words: [String] = []
    /// Texts the error must contain, case-folded.
    public var phrases: [String] = []
    /// Queues the task must be in.
    public var queues: [String] = []
    /// Ids the task must have.
    public var ids: [TaskID] = []
    /// Failed at or after this time.
    public var since: Millis?
    /// Failed before this time.
    public var before: Millis?
    /// Texts the payload must contain, case-folded.
    public var payloadTexts: [String] = []
    /// Fingerprint groups the error must be in.
    public var groups: [UInt64] = []

    /// The empty query: matches every failed task.
    public init() {}

    /// Whether the query has no terms.
    public var isEmpty: Bool { self == FailedQuery() }

    /// Whether `task` matches every term: the brute-force definition the indexes must agree with.
    public func matches(_ task: FailedTask) -> Bool {
        matchesIndexedTerms(task) && matchesResidualTerms(task)
    }

    func matchesIndexedTerms(_ task: FailedTask) -> Bool {
        if !queues.allSatisfy({ $0 == task.queue }) { return false }
        if !ids.allSatisfy({ $0 == task.id }) { return false }
        if !groups.allSatisfy({ $0 == task.group }) { return false }
        if let since, task.failedAt < since { return false }
        if let before, task.failedAt >= before { return false }
        if !words.isEmpty {
            let taskWords = Set(ErrorWords.words(task.error))
            if !words.allSatisfy(taskWords.contains) { return false }
        }
        return true
    }

    /// The terms no index answers: phrases and payload texts.
    var hasResidualTerms: Bool { !phrases.isEmpty || !payloadTexts.isEmpty }

    func matchesResidualTerms(_ task: FailedTask) -> Bool {
        if !phrases.isEmpty {
            let error = task.error.lowercased()
            if !phrases.allSatisfy({ error.contains($0) }) { return false }
        }
        if !payloadTexts.isEmpty {
            let payload = String(decoding: task.payload, as: UTF8.self).lowercased()
            if !payloadTexts.allSatisfy({ payload.contains($0) }) { return false }
        }
        return true
    }
}

/// One error group in an `ERRORS` answer.
public struct ErrorGroup: Sendable, Equatable {
    /// The fingerprint hash.
    public var group: UInt64
    /// The error text of the newest failure in the group.
    public var example: String
    /// How many matching failures the group has.
    public var count: Int
    /// The queues they came from, sorted.
    public var queues: [String]
    /// The oldest failure's time.
    public var firstFailedAt: Millis
    /// The newest failure's time.
    public var lastFailedAt: Millis
}

/// A page of a failed-store search.
public struct FailedPage: Sendable, Equatable {
    /// How many failed tasks match in all.
    public var total: Int
    /// The newest `limit` of them, newest first.
    public var tasks: [FailedTask]
}
