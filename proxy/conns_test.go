package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestMaxConnsBoundsOpenConnections: with MaxConns app connections open,
// the proxy accepts no other until one of them closes; the one that
// waited is then served. Each connection holds a file descriptor, and
// Badger crashes the process when it finds none to open a file with.
func TestMaxConnsBoundsOpenConnections(t *testing.T) {
	tp := newTestProxy(t, Options{Store: &fakeStore{}, MaxConns: 2})
	full := make(chan struct{}, 1)
	tp.onFull = func() {
		select {
		case full <- struct{}{}:
		default:
		}
	}
	tp.serve(t, nil)
	head := "POST http://receiver.example/t0 HTTP/1.1\r\nHost: receiver.example\r\n" +
		"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(hookBody)) + "\r\n\r\n"

	first, second := dialRaw(t, tp.Addr), dialRaw(t, tp.Addr)
	for _, c := range []*rawConn{first, second} {
		resp, body := c.send(t, http.MethodPost, head, hookBody)
		assertAccepted(t, resp, body) // and kept alive
	}
	third := dialRaw(t, tp.Addr) // in the listen queue
	answered := make(chan error, 1)
	go func() {
		if _, err := io.WriteString(third, head+hookBody); err != nil {
			answered <- err
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(third), nil)
		if err == nil {
			_ = resp.Body.Close()
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was served (error %v) while two were open, with MaxConns 2", err)
	case <-full:
	}
	_ = first.Close()
	if err := recv(t, answered, "the answer on the third connection"); err != nil {
		t.Fatalf("third connection: %v", err)
	}
	if logs := tp.logs.String(); !strings.Contains(logs, "app connections at their limit") {
		t.Errorf("nothing logged about the limit:\n%s", logs)
	}
	// A connection still waiting does not hold up Shutdown (the test's
	// cleanup): closing the listener ends the wait.
	_ = dialRaw(t, tp.Addr)
}
