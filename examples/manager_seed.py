# -*- coding:utf-8 -*-
# The tutorial's Manager example with interproc.Manager in place of
# multiprocessing.Manager. The dict and the list live in shared memory, so
# no manager server process is started, and each update is made by the
# child itself rather than sent to a server.
from multiprocessing import Process
from interproc import Manager


def f(d, l):
    d[1] = '1'
    d['2'] = 2
    l.append(1)    # append a 1
    # print(l)


if __name__ == '__main__':
    d = Manager().dict()  # a dict shared between processes, to pass to them
    l = Manager().list(range(5))  # a list

    p_list = []  # the processes
    for i in range(10):
        p = Process(target=f, args=(d, l))  # ten processes, one per turn
        p.start()
        p_list.append(p)    # keep each one

    for res in p_list:  # wait for all of them to end
        res.join()

    print(d)
    print(l)
