# -*- coding:utf-8 -*-
# The tutorial's Queue example with interproc.Queue in place of
# multiprocessing.Queue. The writer ends with a None sentinel, so the reader
# stops by itself and is joined instead of terminated; and say() replaces
# print() so that the two processes' lines come out whole and in order even
# through a pipe or with unbuffered output.
from multiprocessing import Process
from interproc import Queue
import os
import sys
import time
import random


def say(line):
    # print() writes the text and the newline separately; one write and a
    # flush per line keep the writer's and the reader's lines apart.
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


# Code run by the process that writes data:
def write(q):
    say('Process to write: %s' % os.getpid())
    for value in ['A', 'B', 'C']:
        say('Put %s to queue...' % value)
        q.put(value)
        time.sleep(random.random())
    q.put(None)


# Code run by the process that reads data:
def read(q):
    say('Process to read: %s' % os.getpid())
    while True:
        value = q.get()
        if value is None:
            break
        say('Get %s from queue.' % value)


if __name__ == '__main__':
    # The parent process creates the Queue and passes it to each child:
    q = Queue()
    pw = Process(target=write, args=(q,))
    pr = Process(target=read, args=(q,))
    # Start child process pw, which writes:
    pw.start()
    # Start child process pr, which reads:
    pr.start()
    # Wait for pw to finish:
    pw.join()
    # pr stops at the None sentinel, so it can be waited for too:
    pr.join()
