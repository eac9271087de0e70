// The client library (issue 4).
