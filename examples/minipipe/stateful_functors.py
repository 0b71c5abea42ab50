# The "Stateful Functors" page of the minipipe 0.1.9 documentation, unchanged
# except for the import line (`import flowdsl as mp`) and the notebook-only
# `%matplotlib inline` magic. Prints the Fibonacci numbers 0 ... 987.
# The decorator-DSL version is examples/stateful_functors.py.

import flowdsl as mp
import numpy as np
import matplotlib.pyplot as plt

class generate_rand_walk:
    
    def __init__(self, n_steps=100):
        self.n_steps = 100
    
    def local_init(self):
        self.last_step = 0
    
    def run(self):   
        for _ in range(self.n_steps):
            step = np.random.randn() + self.last_step
            self.last_step = step
            yield step

class simple_moving_average:
    
    def __init__(self, window_size = 10):
        self.window_size = window_size
    
    def local_init(self):
        # This method initializes on the local process
        self.queue = []
        self.values = []
        self.means = []
        
    def run(self, data):
        # Enqueue data
        self.queue.append(data)
        
        # Dequeue data once window size has been reached
        if len(self.queue) > self.window_size:
            self.queue.pop(0)
            
        # Calcualte moving average
        ma = sum(self.queue)/len(self.queue)
        
        # Save values and moving averages for plotting at term
        # Normally you wouldn't save these values bc data scale may cause OOM error
        self.values.append(data)
        self.means.append(ma)
        
    def local_term(self):
        # This method runs once on the local process at termination
        # Here we simply plot the results 
        steps = range(len(self.values))
        plt.plot(steps, self.values, label='Random Walk')
        plt.plot(steps, self.means, label='Smoothed Walk')
        plt.title('Simple Moving Average')
        plt.xlabel('Steps')
        plt.legend()
        plt.show() # This is necessary since plot in on local process


rw = generate_rand_walk(100)
sma = simple_moving_average(10)

pline = mp.PipeLine()
pline.add(mp.Source(rw, name='random_walk'))
pline.add(mp.Sink(sma, name='moving_avg'))

pline.build()
pline.diagram()


pline.run()
pline.close()


from multiprocessing import Event

# minipipe uses multiprocessing Events for termination flags
term_flag = Event() 
n = 1000 # max fib number

def fib(x_1, x_2):
    
    print(x_1)
    
    # terminate when n is reached
    if x_2 >= n:
        term_flag.set()        
    
    return x_2, x_1 + x_2


# initialize streams
s1 = mp.Stream()
s2 = mp.Stream()

# initialize streams instead of using a Source
s1.q.put(0) 
s2.q.put(1)

p = mp.Transform(fib, 'fib', upstreams=[s1, s2], downstreams=[s1, s2])
p.set_term_flag(term_flag) # term flag needs to be set explicitly 

psys = mp.PipeSystem([p])
psys.build()
psys.diagram(draw_streams=True)


psys.run()
psys.close()
