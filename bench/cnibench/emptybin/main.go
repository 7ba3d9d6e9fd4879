// Command emptybin does nothing: cnibench execs it, built like sidelane-cni (static, CGO off),
// as the floor under every plugin exec on the machine at hand (process start, Go runtime).
package main

func main() {}
