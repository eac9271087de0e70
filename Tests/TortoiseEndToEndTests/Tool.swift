import Foundation
import TortoiseTestSupport

/// Runs one of the project's binaries to completion and captures what it printed.
struct Tool {
    var status: Int32
    var stdout: String
    var stderr: String

    static func run(_ name: String, _ args: [String], port: Int? = nil, environment: [String: String] = [:], timeout: Double = 30) throws -> Tool {
        var env = ChildProcess.environment(["TORTOISE_TOKEN": nil, "TORTOISE_HOST": nil, "TORTOISE_PORT": port.map(String.init)])
        for (k, v) in environment { env[k] = v }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tortoise-tool-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try ChildProcess(BrokerProcess.binary(name), args, environment: env,
                                 stdout: .file(dir + "/out", append: false), stderr: .file(dir + "/err", append: false))
        guard p.wait(timeout: timeout) else { throw TestFailure("\(name) \(args) did not finish within \(timeout)s") }
        return Tool(status: p.terminationStatus,
                    stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
                    stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
    }
}

/// A long-running binary (a worker) whose output is read as it comes.
final class Background: @unchecked Sendable {
    let process: ChildProcess
    let outputPath: String

    init(_ name: String, _ args: [String] = [], port: Int) throws {
        outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("tortoise-bg-\(UUID().uuidString)").path
        let env = ChildProcess.environment(["TORTOISE_PORT": String(port), "TORTOISE_TOKEN": nil])
        process = try ChildProcess(BrokerProcess.binary(name), args, environment: env,
                                   stdout: .file(outputPath, append: true), stderr: .file(outputPath, append: true))
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
        process.signal(SIGINT)
        process.wait()
        return process.terminationStatus
    }

    deinit { try? FileManager.default.removeItem(atPath: outputPath) }
}
