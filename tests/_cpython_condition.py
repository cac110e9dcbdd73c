"""CPython's own Condition tests (``test._test_multiprocessing._TestCondition``)
pointed at interproc: ``python tests/_cpython_condition.py <start method>``.

Two variants, as CPython runs them: "processes" with interproc's
Condition, Semaphore and Value in place of multiprocessing's, and
"manager" with ``interproc.Manager()``.  ``check_invariant`` is left out:
it reads multiprocessing's private semaphores.  Exits 0 when every test
passed; the caller bounds the run with a timeout, since the tests
themselves wait without one.
"""

import multiprocessing
import signal
import sys
import unittest

import interproc
import test._test_multiprocessing as cpython


# test_wait_result interrupts a wait with SIGINT and expects KeyboardInterrupt.
# A runner started in the background by a non-interactive shell has SIGINT
# ignored, and that disposition is inherited across exec: put Python's own
# handler back, as the interpreter would have installed it.
signal.signal(signal.SIGINT, signal.default_int_handler)


class WithProcessesTestCondition(cpython._TestCondition, cpython.ProcessesMixin, unittest.TestCase):
    Condition = staticmethod(interproc.Condition)
    Semaphore = staticmethod(interproc.Semaphore)
    Value = staticmethod(interproc.Value)

    def check_invariant(self, cond):
        pass


class WithManagerTestCondition(cpython._TestCondition, cpython.ManagerMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cpython.BaseMixin.setUpClass.__func__(cls)
        cls.manager = interproc.Manager()

    @classmethod
    def tearDownClass(cls):
        cls.manager.shutdown()
        cls.manager = None
        cpython.BaseMixin.tearDownClass.__func__(cls)

    def check_invariant(self, cond):
        pass


def main(method):
    multiprocessing.set_start_method(method, force=True)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(
        loader.loadTestsFromTestCase(case) for case in (WithProcessesTestCondition, WithManagerTestCondition)
    )
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
