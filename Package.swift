// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "tortoisemq",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tortoised", targets: ["tortoised"]),
        .executable(name: "tortoisectl", targets: ["tortoisectl"]),
        .library(name: "TortoiseClient", targets: ["TortoiseClient"]),
        .library(name: "TortoiseStorage", targets: ["TortoiseStorage"]),
        .library(name: "TortoiseProtocol", targets: ["TortoiseProtocol"]),
        .library(name: "TortoiseServer", targets: ["TortoiseServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "TortoiseStorage",
            dependencies: [
                "CLMDB", "CZlib",
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "TortoiseProtocol",
            dependencies: [
                "TortoiseStorage",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "TortoiseServer",
            dependencies: [
                "TortoiseStorage",
                "TortoiseProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "TortoiseClient",
            dependencies: [
                "TortoiseProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "tortoised",
            dependencies: [
                "TortoiseServer",
                "TortoiseStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tortoisectl",
            dependencies: [
                "TortoiseClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "tortoise-storage-stress",
            dependencies: ["TortoiseStorage"],
            path: "Sources/tortoise-storage-stress"
        ),
        .executableTarget(
            name: "tortoise-torture",
            dependencies: [
                "TortoiseClient",
                "TortoiseProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "new-task",
            dependencies: ["TortoiseClient"],
            path: "Examples/new-task"
        ),
        .executableTarget(
            name: "worker",
            dependencies: [
                "TortoiseClient",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Examples/worker"
        ),
        .target(
            name: "TortoiseTestSupport",
            path: "Tests/TortoiseTestSupport"
        ),
        .testTarget(
            name: "TortoiseStorageTests",
            dependencies: ["TortoiseStorage", "TortoiseTestSupport"]
        ),
        .testTarget(
            name: "TortoiseProtocolTests",
            dependencies: ["TortoiseProtocol", "TortoiseTestSupport"]
        ),
        .testTarget(
            name: "TortoiseEndToEndTests",
            dependencies: [
                "TortoiseClient",
                "TortoiseStorage",
                "TortoiseProtocol",
                "TortoiseTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
