package main

// FerretDB 1.24's SQLite handler runs an update as a query, then a write by _id, outside one transaction
// (FerretDB issue #3040): two concurrent updates of one document can both read it and the second write then
// erases the first. MongoDB applies each update to a document atomically, and lethe relies on that
// (conditional updates, counters, leases). So clients reach FerretDB through this proxy, which passes
// requests through unchanged but lets only one update, delete or findAndModify run at a time.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

const (
	opMsg          = 2013
	moreToComeFlag = 1 << 1
	maxMessage     = 48_000_000
)

// serialized are the commands that read and then write a document.
var serialized = map[string]bool{"update": true, "delete": true, "findAndModify": true, "findandmodify": true}

type proxy struct {
	backend string
	writes  sync.Mutex
	logger  *slog.Logger
}

func (p *proxy) serve(l net.Listener) error {
	for {
		client, err := l.Accept()
		if err != nil {
			return err
		}
		go p.handle(client)
	}
}

func (p *proxy) handle(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("unix", p.backend)
	if err != nil {
		p.logger.Error("cannot reach FerretDB", "error", err)
		return
	}
	defer server.Close()
	for {
		request, err := readMessage(client)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				p.logger.Debug("client connection ended", "error", err)
			}
			return
		}
		if err := p.exchange(client, server, request); err != nil {
			p.logger.Debug("exchange failed", "error", err)
			return
		}
	}
}

// exchange sends one request and relays its reply (none when the client said moreToCome).
func (p *proxy) exchange(client, server net.Conn, request []byte) error {
	if serialized[commandName(request)] {
		p.writes.Lock()
		defer p.writes.Unlock()
	}
	if _, err := server.Write(request); err != nil {
		return err
	}
	if opCode(request) == opMsg && flags(request)&moreToComeFlag != 0 {
		return nil
	}
	for {
		reply, err := readMessage(server)
		if err != nil {
			return err
		}
		if _, err := client.Write(reply); err != nil {
			return err
		}
		// An exhaust reply says moreToCome: more replies follow without a request.
		if opCode(reply) != opMsg || flags(reply)&moreToComeFlag == 0 {
			return nil
		}
	}
}

func readMessage(r io.Reader) ([]byte, error) {
	header := make([]byte, 16)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	length := int(binary.LittleEndian.Uint32(header[0:4]))
	if length < 16 || length > maxMessage {
		return nil, fmt.Errorf("bad message length %d", length)
	}
	message := make([]byte, length)
	copy(message, header)
	if _, err := io.ReadFull(r, message[16:]); err != nil {
		return nil, err
	}
	return message, nil
}

func opCode(m []byte) int32 { return int32(binary.LittleEndian.Uint32(m[12:16])) }

func flags(m []byte) uint32 {
	if len(m) < 20 {
		return 0
	}
	return binary.LittleEndian.Uint32(m[16:20])
}

// commandName is the first key of an OP_MSG body section: the command's name ("" for anything else).
func commandName(m []byte) string {
	if opCode(m) != opMsg || len(m) < 21+4+1 {
		return ""
	}
	i := 20
	for i < len(m) {
		kind := m[i]
		i++
		if kind == 1 { // a document sequence: size, identifier, documents; skip it
			if i+4 > len(m) {
				return ""
			}
			i += int(binary.LittleEndian.Uint32(m[i : i+4]))
			continue
		}
		if kind != 0 || i+5 > len(m) {
			return ""
		}
		// The body document: int32 size, then the first element: type byte, then its name as a C string.
		start := i + 5
		for end := start; end < len(m); end++ {
			if m[end] == 0 {
				return string(m[start:end])
			}
		}
		return ""
	}
	return ""
}
