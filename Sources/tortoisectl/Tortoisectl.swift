import ArgumentParser
import Foundation
import TortoiseClient

/// `tortoisectl`: look at, search, replay and delete failures; put tasks; see counts.
struct Tortoisectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tortoisectl",
        abstract: "The TortoiseMQ operator's tool: look at, search, replay and delete failed tasks.",
        discussion: """
            Queries are words joined with spaces (see docs/protocol.md): error
            words, "a phrase", queue:NAME, id:ID, since:2h,
            before:2026-11-01T00:00:00Z, payload:TEXT, group:HEX.

            Examples:
              tortoisectl stats
              tortoisectl failed nightmare --limit 20
              tortoisectl failed queue:emails since:1h "connection refused"
              tortoisectl errors since:1d
              tortoisectl replay group:3f2a9c0e1b7d4a55 --dry-run
              tortoisectl replay nightmare
              tortoisectl delete queue:thumbnails before:30d

            Exit status: 0 success, 1 the broker answered an error, 2 bad usage,
            3 the broker cannot be reached. TORTOISE_HOST, TORTOISE_PORT and
            TORTOISE_TOKEN set the defaults of --host, --port and --token.
            """,
        subcommands: [Put.self, Stats.self, Failed.self, Errors.self, Replay.self, Delete.self]
    )

    @OptionGroup var connection: ConnectionOptions
}

/// Where the broker is: shared by every subcommand.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The broker's host (default: $TORTOISE_HOST or 127.0.0.1).")
    var host: String?

    @Option(help: "The broker's port (default: $TORTOISE_PORT or 7654).")
    var port: Int?

    @Option(help: "The broker's token (default: $TORTOISE_TOKEN).")
    var token: String?

    func connect() async throws -> TortoiseClient {
        try await TortoiseClient.connect(TortoiseClientConfiguration(host: host, port: port, token: token))
    }
}

/// A failure to report with a given exit status.
struct CLIFailure: Error {
    var status: Int32
    var message: String
}

/// Runs a client call, turning library errors into the exit statuses of the contract.
func withBroker<R>(_ options: ConnectionOptions, _ body: (TortoiseClient) async throws -> R) async throws -> R {
    let client: TortoiseClient
    do {
        client = try await options.connect()
    } catch let e as TortoiseClientError {
        throw CLIFailure(status: e.code == .connectionFailed ? 3 : 1, message: e.description)
    }
    defer { Task { await client.close() } }
    do {
        return try await body(client)
    } catch let e as TortoiseClientError {
        switch e.code {
        case .connectionFailed, .connectionLost: throw CLIFailure(status: 3, message: e.description)
        case .badArgument: throw CLIFailure(status: 2, message: e.description)
        default: throw CLIFailure(status: 1, message: e.description)
        }
    }
}

@main
enum Main {
    static func main() async {
        do {
            var command = try Tortoisectl.parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CLIFailure {
            FileHandle.standardError.write(Data("tortoisectl: \(failure.message)\n".utf8))
            exit(failure.status)
        } catch {
            let code = Tortoisectl.exitCode(for: error)
            let message = Tortoisectl.fullMessage(for: error)
            if code == .success {
                print(message)
                exit(0)
            }
            FileHandle.standardError.write(Data((message.isEmpty ? "\(error)" : message).utf8 + [10]))
            exit(code == .failure ? 1 : 2)
        }
    }
}
