// The original story's producer: `new-task <message>` puts one task on the `tasks` queue.
// The broker is found through TORTOISE_HOST, TORTOISE_PORT and TORTOISE_TOKEN.
import Foundation
import TortoiseClient

let words = CommandLine.arguments.dropFirst()
let message = words.isEmpty ? "Hello World!" : words.joined(separator: " ")
do {
    let client = try await TortoiseClient.connect()
    let id = try await client.put("tasks", message)
    print(" [x] Sent '\(message)' as task \(id)")
    await client.close()
} catch {
    FileHandle.standardError.write(Data("new-task: \(error)\n".utf8))
    exit(1)
}
