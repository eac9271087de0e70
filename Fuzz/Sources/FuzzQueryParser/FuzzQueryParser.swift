import TortoiseProtocol
import TortoiseStorage

/// Parses the input as a query; a parsed query must match consistently and an error
/// must name a position inside the text.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    switch QueryParser.parse(text, now: 1_800_000_000_000) {
    case .success(let q):
        let task = FailedTask(id: 1, queue: "q", error: text, group: ErrorFingerprint.group(of: text),
                              deliveries: 1, replays: 0, failedAt: 1_800_000_000_000, payload: Array(text.utf8))
        _ = q.matches(task)
        _ = ErrorFingerprint.fingerprint(text)
    case .failure(let e):
        precondition(e.code == .badArgument && e.message.hasPrefix("query error at character "))
    }
    return 0
}
