import Foundation

/// Runs one of the project's binaries to completion and captures what it printed.
struct Tool {
    var status: Int32
    var stdout: String
    var stderr: String

    static func run(_ name: String, _ args: [String], port: Int? = nil, environment: [String: String] = [:], timeout: Double = 30) throws -> Tool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: BrokerProcess.binary(name))
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["TORTOISE_TOKEN"] = nil
        env["TORTOISE_HOST"] = nil
        if let port { env["TORTOISE_PORT"] = String(port) } else { env["TORTOISE_PORT"] = nil }
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tortoise-tool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let outURL = dir.appendingPathComponent("out")
        let errURL = dir.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if p.isRunning { p.terminate(); throw TestFailure("\(name) \(args) did not finish") }
        return Tool(status: p.terminationStatus,
                    stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                    stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }
}

/// A long-running binary (a worker) whose output is read as it comes.
final class Background: @unchecked Sendable {
    let process = Process()
    let outputPath: String

    init(_ name: String, _ args: [String] = [], port: Int) throws {
        outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("tortoise-bg-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: BrokerProcess.binary(name))
        process.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["TORTOISE_PORT"] = String(port)
        env["TORTOISE_TOKEN"] = nil
        process.environment = env
        let h = FileHandle(forWritingAtPath: outputPath)
        process.standardOutput = h
        process.standardError = h
        try process.run()
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    func waitFor(_ text: String, count: Int = 1, timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.components(separatedBy: text).count - 1 >= count { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    func interrupt() -> Int32 {
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }
}
