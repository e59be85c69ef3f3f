"""Reference texts for the speech benchmark, written for it (no numbers in digits: Whisper
may write them either way, which would count as errors that are not)."""

PARAGRAPHS: dict[str, list[str]] = {
    "en": [
        "What is the weather like in Paris today?",
        "Please describe the picture I just sent you.",
        "Every morning the baker opens his small shop at the corner of the market square.",
        "The smell of fresh bread drifts along the street and wakes up the whole neighbourhood.",
        "Children stop on their way to school and press their noses against the window.",
        "An old man buys the same brown loaf every day and talks about the weather.",
        "In the afternoon the square fills with people who sell fruit, flowers and cheese.",
        "A young woman plays the violin near the fountain while tourists take photographs.",
        "When the sun goes down, the lamps are lit and the cafes put chairs outside.",
        "Friends meet for dinner, and the streets stay busy until late in the evening.",
        "On rainy days the square is quiet, and only the pigeons walk across the stones.",
        "The baker then bakes fewer loaves, but he always keeps one for the old man.",
        "Many visitors say that this little square is the heart of the town.",
        "They come back year after year to walk, to eat and to listen to the music.",
    ],
    "es": [
        "¿Qué tiempo hace hoy en Madrid?",
        "Por favor, describe la foto que te acabo de enviar.",
        "Cada mañana el panadero abre su pequeña tienda en la esquina de la plaza del mercado.",
        "El olor del pan recién hecho llega a toda la calle y despierta al barrio entero.",
        "Los niños se paran camino del colegio y miran los pasteles a través del cristal.",
        "Un señor mayor compra la misma barra de pan cada día y habla del tiempo.",
        "Por la tarde la plaza se llena de gente que vende fruta, flores y queso.",
        "Una joven toca el violín junto a la fuente mientras los turistas hacen fotos.",
        "Cuando se pone el sol, se encienden las farolas y los bares sacan sus mesas.",
        "Los amigos se reúnen para cenar y las calles siguen llenas hasta muy tarde.",
    ],
    "fr": [
        "Quel temps fait-il aujourd'hui à Paris?",
        "Peux-tu décrire la photo que je viens d'envoyer?",
        "Chaque matin, le boulanger ouvre sa petite boutique au coin de la place du marché.",
        "L'odeur du pain frais se répand dans la rue et réveille tout le quartier.",
        "Les enfants s'arrêtent en allant à l'école et regardent les gâteaux dans la vitrine.",
        "Un vieil homme achète la même baguette tous les jours et parle du temps qu'il fait.",
        "L'après-midi, la place se remplit de marchands de fruits, de fleurs et de fromage.",
        "Une jeune femme joue du violon près de la fontaine pendant que les touristes prennent des photos.",
        "Quand le soleil se couche, on allume les lampes et les cafés installent leurs terrasses.",
        "Les amis se retrouvent pour dîner et les rues restent animées jusqu'à tard dans la nuit.",
    ],
    "de": [
        "Wie ist das Wetter heute in Berlin?",
        "Bitte beschreibe das Bild, das ich dir geschickt habe.",
        "Jeden Morgen öffnet der Bäcker seinen kleinen Laden an der Ecke des Marktplatzes.",
        "Der Duft von frischem Brot zieht durch die Straße und weckt das ganze Viertel.",
        "Die Kinder bleiben auf dem Weg zur Schule stehen und schauen in das Schaufenster.",
        "Ein alter Mann kauft jeden Tag dasselbe Brot und spricht über das Wetter.",
        "Am Nachmittag füllt sich der Platz mit Menschen, die Obst, Blumen und Käse verkaufen.",
        "Eine junge Frau spielt Geige am Brunnen, während die Touristen Fotos machen.",
        "Wenn die Sonne untergeht, werden die Lampen angezündet und die Cafés stellen Stühle hinaus.",
        "Freunde treffen sich zum Abendessen, und die Straßen bleiben bis spät in die Nacht belebt.",
        "An regnerischen Tagen ist der Platz still, und nur die Tauben laufen über die Steine.",
        "Dann backt der Bäcker weniger Brote, aber eines hebt er immer für den alten Mann auf.",
        "Viele Besucher sagen, dass dieser kleine Platz das Herz der Stadt ist.",
        "Sie kommen Jahr für Jahr zurück, um spazieren zu gehen, zu essen und der Musik zuzuhören.",
    ],
}

# espeak-ng voice -> (language code of the reference text)
VOICES = {"en-us": "en", "es": "es", "fr-fr": "fr", "de": "de"}

WORDS_PER_SECOND = 2.25  # espeak-ng at -s 140 on these texts, pauses included (measured)


def text_for(language: str, seconds: float, start: int = 0) -> str:
    """Whole sentences from ``start`` adding up to about ``seconds`` of speech at -s 140."""
    sentences = PARAGRAPHS[language]
    chosen, words = [], 0
    i = start
    while words < seconds * WORDS_PER_SECOND and len(chosen) < len(sentences):
        sentence = sentences[i % len(sentences)]
        chosen.append(sentence)
        words += len(sentence.split())
        i += 1
    return " ".join(chosen)
