"""A small English corpus for training the offline test tokenizer (`train_tokenizer.py`).

Written for this project (no downloads): varied everyday prose, questions about pictures, videos and
sounds (what the model is asked), dialogue, numbers, dates, prices and punctuation, so that common
words become single tokens. The text is fixed; changing it changes every trained tokenizer.
"""

from __future__ import annotations

CORPUS = """\
The morning was cold and clear. A thin layer of frost covered the grass, and the sun rose slowly over
the hills behind the small town. People walked to work with their hands in their pockets, and the
baker on the corner opened his door at six o'clock, as he had done every day for thirty years.

What is happening in this video? A man is walking a dog along the river. The dog stops to sniff a
tree, then runs ahead to chase a bird. In the background, a woman is riding a bicycle across a bridge,
and two children are playing with a red ball on the grass.

Describe the image in detail. The picture shows a kitchen with white walls and a wooden table. On the
table there is a bowl of fruit: three apples, a banana and a bunch of green grapes. A cat is sleeping
on a chair next to the window, and the light from the window falls across the floor.

What sound do you hear? I can hear the rain on the roof, a car passing in the street and, far away,
the bell of a church. Someone is speaking in the next room, but the words are not clear. There is
also music playing quietly, a slow song with a piano and a soft voice.

Question: How many people are in the video, and what are they doing?
Answer: There are four people in the video. Two of them are sitting at a table and talking, one is
cooking in the kitchen, and the last one is standing by the door with a phone in her hand.

Question: What color is the car?
Answer: The car is blue, with a white stripe along the side.

Question: Where does the video take place?
Answer: It takes place in a busy market in the center of a city. You can see many small shops, people
buying food, and a man selling flowers from a cart.

The history of the town goes back more than five hundred years. It was first built as a small
village near the river, where farmers brought their animals and grain to sell. Over time, the
village grew into a market town, and in 1872 the railway arrived, which changed everything. New
houses were built, a school and a hospital were opened, and the population doubled in less than
twenty years.

To make a simple bread, you need 500 grams of flour, 10 grams of salt, 7 grams of dry yeast and about
350 milliliters of warm water. Mix the flour, salt and yeast in a large bowl. Add the water and stir
until the dough comes together. Knead it for ten minutes, until it is smooth and elastic. Cover the
bowl and let the dough rise for one hour, or until it has doubled in size. Shape it into a loaf, let
it rise again for thirty minutes, and bake it at 220 degrees for 35 to 40 minutes.

"Are you coming with us tonight?" asked Maria.
"I don't think so," said Tom. "I have to finish my work first. Maybe next time."
"That's what you said last week!" She laughed. "Come on, it's only for two hours."
"All right, all right. I'll meet you there at eight."

Scientists study the natural world by asking questions, making observations and testing ideas with
experiments. A good experiment changes only one thing at a time, so that the effect of that change
can be measured. The results are then shared with other scientists, who may repeat the experiment to
check that the results are the same. In this way, knowledge grows step by step.

Light travels at about 300,000 kilometers per second. Sound is much slower: in air, it travels at
roughly 343 meters per second. This is why you see the flash of lightning before you hear the thunder.
If you count the seconds between the flash and the sound, and divide by three, you get the distance
to the storm in kilometers.

The train leaves the station at 9:45 and arrives in the city at 11:30. A one-way ticket costs $12.50,
and a return ticket costs $20.00. Children under 12 travel for half price. On weekends, there are
fewer trains, so please check the timetable before you travel.

The meeting is on Tuesday, March 14, at 3 p.m. in room 204. Please bring your notes and the report
from last month. If you cannot attend, send an email to the team before Monday.

In the video, a woman stands on a stage and speaks to a large audience. She points to a screen behind
her, which shows a chart with three lines. The audience listens carefully, and at the end they clap.
Then a man in a dark suit walks onto the stage and shakes her hand.

The forest was quiet except for the sound of the wind in the trees. A deer stepped out from behind a
rock, looked around, and then disappeared into the shadows. High above, an eagle turned in slow
circles, waiting. The path was narrow and covered with leaves, and it climbed steeply toward the top
of the mountain.

Can you tell me what the person in the image is wearing? The person is wearing a long black coat, a
gray scarf and brown boots. He is carrying a small bag over his shoulder and holding an umbrella,
although it is not raining.

Please summarize the main points of the video. First, the speaker explains why sleep is important for
health. Second, she describes what happens in the brain during sleep. Third, she gives some simple
advice: go to bed at the same time every night, avoid screens before sleep, and keep the bedroom dark
and cool.

Water boils at 100 degrees Celsius at sea level, but at a lower temperature high in the mountains,
because the air pressure is lower. Ice melts at 0 degrees. The human body is about 60 percent water,
and an adult needs around two liters of water each day, more in hot weather or after exercise.

The old man sat on the bench and fed the pigeons. Every afternoon he came to the park with a bag of
bread, and every afternoon the birds were waiting for him. Children sometimes stopped to watch, and he
would smile and give them a piece of bread to throw. Nobody knew his name, but everybody knew him.

Is the music in this clip happy or sad? The music is slow and quiet, played on a violin, and it sounds
a little sad. Later, a drum starts, the tempo becomes faster, and the mood changes to something more
hopeful and bright.

A computer program is a list of instructions that a computer follows, one after another. Programs are
written in languages such as Python, C and Java. A program can read input, store values in memory,
make decisions, repeat steps in a loop and write output to a file or to the screen. Errors in a
program are called bugs, and finding them is called debugging.

The weather forecast for tomorrow: cloudy in the morning, with a chance of rain in the afternoon.
Temperatures between 8 and 14 degrees. Strong winds from the west in the evening. On Thursday and
Friday it will be sunny and warmer, with highs of 18 to 21 degrees.

Why is the sky blue? Sunlight is made of many colors. When it passes through the air, the blue light
is scattered more than the red light, because it has a shorter wavelength. So when we look up, we see
blue light coming from every direction. At sunset, the light travels through more air, the blue is
scattered away, and the sky turns orange and red.

She opened the letter with shaking hands. It was from her brother, who had left the country ten years
before and never written. "Dear Anna," it began, "I know I should have written a long time ago. I am
sorry. I am coming home next month, and I would like to see you, if you will see me."

How long is the video? The video is about two minutes long. It starts with a view of the ocean, then
shows a boat leaving the harbor. After one minute, the camera moves inside the boat, where a group of
people are eating lunch and laughing. The last scene shows the boat returning at night, with its
lights reflected in the dark water.

Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 25 50 75 99 100 128 256 512 1000 1024 2048 4096 2024 1999.
Fractions and decimals: 1/2, 3/4, 0.5, 2.75, 3.14159, -7, +42, 15%, 1,000,000.
Punctuation: comma, period. Question? Exclamation! Colon: semicolon; dash - and long dash -- (in
brackets) [square] {curly} "double quotes" 'single quotes' apostrophe's, slash / backslash \\ at @
hash # dollar $ percent % caret ^ and & star * underscore _ equals = plus + tilde ~ pipe | less < greater >.

Good morning! Good afternoon. Good evening. Thank you very much. You're welcome. Excuse me, could you
help me, please? Yes, of course. No, thank you. I'm sorry, I don't understand. Could you say that
again, more slowly? Where is the nearest station? It is about five minutes from here, on the left.

The engineer checked the machine before starting it. The motor made a low sound at first, then a
steady hum as it reached full speed. A red light on the panel turned green, which meant that the
system was ready. She wrote the time and the temperature in her notebook and moved on to the next one.

In summary, the video shows a family preparing dinner together. The father cuts vegetables, the mother
cooks the meat, and the two children set the table. At the end, they all sit down, and the youngest
child says something that makes everyone laugh. It is a simple, warm scene about everyday life.
"""
