# -*- coding:utf-8 -*-
# The tutorial's Pipe example with interproc.Pipe in place of
# multiprocessing.Pipe. The seed's child loops for ever, so its p.join()
# never returns; here the parent closes its end when it is done, the child's
# recv() then raises EOFError, its loop ends, and join() returns. say()
# replaces print() so that the two processes' lines come out whole even
# through a pipe or with unbuffered output.
from multiprocessing import Process
from interproc import Pipe
import sys


def say(*args):
    # print() writes each piece separately; one write and a flush per line
    # keep the parent's and the child's lines apart.
    sys.stdout.write(' '.join(str(arg) for arg in args) + '\n')
    sys.stdout.flush()


def f(conn, parent_conn):
    # A forked child inherits the parent's end too, and the pipe only ends
    # once every process holding that end has closed it: close this copy so
    # that the parent's close() alone ends the loop below. (Under spawn the
    # copy came in as an argument; closing it is just as right.)
    parent_conn.close()
    conn.send([42, None, 'hello'])
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        say("child rec:", msg)


if __name__ == '__main__':
    parent_conn, child_conn = Pipe()
    p = Process(target=f, args=(child_conn, parent_conn))
    p.start()
    # Only the child keeps its end: if it died, recv() here would raise
    # EOFError rather than wait for ever.
    child_conn.close()
    say("parent rec:", parent_conn.recv())   # prints "[42, None, 'hello']"
    parent_conn.send('666')
    # Done sending: closing is what lets the child's loop, and so join(), end.
    parent_conn.close()
    p.join()
