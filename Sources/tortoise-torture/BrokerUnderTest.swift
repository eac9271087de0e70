import Foundation

/// The tortoised process being tortured: started on the same directory and port each time.
final class BrokerUnderTest {
    let binary: String
    let directory: String
    private(set) var port = 0
    private var process: Process?

    /// More arguments for tortoised.
    let extraArguments: [String]

    init(binary: String, directory: String, extraArguments: [String] = []) throws {
        self.binary = binary
        self.directory = directory
        self.extraArguments = extraArguments
    }

    /// Starts tortoised and waits for its listening line; a store that does not reopen
    /// cleanly is a failure of the torture.
    func start() throws {
        for attempt in 0..<50 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["--data", directory, "--port", String(port)] + extraArguments
            let out = Pipe()
            let err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            var line = [UInt8]()
            while true {
                let b = out.fileHandleForReading.readData(ofLength: 1)
                if b.isEmpty || b.first == 10 { break }
                line += b
            }
            let text = String(decoding: line, as: UTF8.self)
            if text.hasPrefix("tortoised listening on "), let p2 = Int(text.split(separator: ":").last ?? "") {
                port = p2
                process = p
                return
            }
            p.waitUntilExit()
            let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            // The port may linger for a moment after a kill; anything else is fatal.
            if errText.contains("cannot listen"), attempt < 49 {
                Thread.sleep(forTimeInterval: 0.1)
                continue
            }
            throw TortureFailure(description: "tortoised did not restart cleanly: \(errText)")
        }
    }

    func kill9() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    func terminate() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        process = nil
    }
}

struct TortureFailure: Error, CustomStringConvertible {
    var description: String
}
