"""Two passages of Python's tutorial (lists, dictionaries) and their translations: the multilingual test set.

Written for the tests after the tutorial's sections 5.1 and 5.5 and their community translations; what the
tests need is real documentation prose in each language, as long in words (or characters) as the original.
"""

from __future__ import annotations

PASSAGES: dict[str, list[str]] = {
    "en": [
        "The list data type has some more methods. Here are all of the methods of list objects. The method append "
        "adds an item to the end of the list. The method extend extends the list by appending all the items from "
        "the iterable. The method insert inserts an item at a given position. The first argument is the index of "
        "the element before which to insert, so a.insert(0, x) inserts at the front of the list, and "
        "a.insert(len(a), x) is equivalent to a.append(x). The method remove removes the first item from the list "
        "whose value is equal to x. It raises a ValueError if there is no such item. The method pop removes the "
        "item at the given position in the list, and returns it. If no index is specified, a.pop() removes and "
        "returns the last item in the list.",
        "Another useful data type built into Python is the dictionary. Dictionaries are sometimes found in other "
        "languages as associative memories or associative arrays. Unlike sequences, which are indexed by a range "
        "of numbers, dictionaries are indexed by keys, which can be any immutable type; strings and numbers can "
        "always be keys. It is best to think of a dictionary as a set of key: value pairs, with the requirement "
        "that the keys are unique within one dictionary. A pair of braces creates an empty dictionary. Placing a "
        "comma-separated list of key: value pairs within the braces adds initial key: value pairs to the "
        "dictionary; this is also the way dictionaries are written on output. The main operations on a "
        "dictionary are storing a value with some key and extracting the value given the key.",
    ],
    "de": [
        "Der Datentyp Liste hat noch einige weitere Methoden. Hier sind alle Methoden von Listenobjekten. Die "
        "Methode append fügt ein Element am Ende der Liste hinzu. Die Methode extend erweitert die Liste, indem sie "
        "alle Elemente aus dem Iterable anhängt. Die Methode insert fügt ein Element an einer bestimmten Position "
        "ein. Das erste Argument ist der Index des Elements, vor dem eingefügt werden soll, also fügt "
        "a.insert(0, x) am Anfang der Liste ein, und a.insert(len(a), x) ist gleichbedeutend mit a.append(x). Die "
        "Methode remove entfernt das erste Element aus der Liste, dessen Wert gleich x ist. Sie löst einen "
        "ValueError aus, wenn es kein solches Element gibt. Die Methode pop entfernt das Element an der "
        "angegebenen Position in der Liste und gibt es zurück. Wenn kein Index angegeben ist, entfernt a.pop() das "
        "letzte Element der Liste und gibt es zurück.",
        "Ein weiterer nützlicher Datentyp, der in Python eingebaut ist, ist das Dictionary. Dictionaries gibt es in "
        "anderen Sprachen manchmal als assoziative Speicher oder assoziative Arrays. Anders als Sequenzen, die über "
        "einen Zahlenbereich indiziert werden, werden Dictionaries über Schlüssel indiziert, die von jedem "
        "unveränderlichen Typ sein können; Zeichenketten und Zahlen können immer Schlüssel sein. Am besten stellt "
        "man sich ein Dictionary als eine Menge von Schlüssel-Wert-Paaren vor, mit der Bedingung, dass die "
        "Schlüssel innerhalb eines Dictionarys eindeutig sind. Ein Paar geschweifter Klammern erzeugt ein leeres "
        "Dictionary. Eine durch Kommas getrennte Liste von Schlüssel-Wert-Paaren innerhalb der Klammern fügt dem "
        "Dictionary anfängliche Paare hinzu; so werden Dictionaries auch bei der Ausgabe geschrieben. Die "
        "wichtigsten Operationen auf einem Dictionary sind das Speichern eines Wertes unter einem Schlüssel und "
        "das Auslesen des Wertes zu einem gegebenen Schlüssel.",
    ],
    "fr": [
        "Le type de données liste possède d'autres méthodes. Voici toutes les méthodes des objets de type liste. "
        "La méthode append ajoute un élément à la fin de la liste. La méthode extend étend la liste en y ajoutant "
        "tous les éléments de l'itérable. La méthode insert insère un élément à la position indiquée. Le premier "
        "argument est la position de l'élément avant lequel l'insertion doit se faire, donc a.insert(0, x) insère "
        "l'élément en tête de la liste et a.insert(len(a), x) est équivalent à a.append(x). La méthode remove "
        "supprime de la liste le premier élément dont la valeur est égale à x. Une exception ValueError est levée "
        "s'il n'existe aucun élément avec cette valeur. La méthode pop enlève de la liste l'élément situé à la "
        "position indiquée et le renvoie. Si aucune position n'est indiquée, a.pop() enlève et renvoie le dernier "
        "élément de la liste.",
        "Un autre type de données très utile, natif dans Python, est le dictionnaire. Ces dictionnaires sont "
        "parfois présents dans d'autres langages sous le nom de mémoires associatives ou de tableaux associatifs. "
        "À la différence des séquences, qui sont indexées par des nombres, les dictionnaires sont indexés par des "
        "clés, qui peuvent être de n'importe quel type immuable ; les chaînes de caractères et les nombres peuvent "
        "toujours être des clés. Le plus simple est de considérer les dictionnaires comme des ensembles de paires "
        "clé: valeur, les clés devant être uniques au sein d'un dictionnaire. Une paire d'accolades crée un "
        "dictionnaire vide. Placer une liste de paires clé: valeur séparées par des virgules à l'intérieur des "
        "accolades ajoute les valeurs correspondantes au dictionnaire ; c'est également de cette façon que les "
        "dictionnaires sont affichés. Les opérations classiques sur un dictionnaire consistent à stocker une "
        "valeur pour une clé et à extraire la valeur correspondant à une clé.",
    ],
    "es": [
        "El tipo de dato lista tiene algunos métodos más. Aquí están todos los métodos de los objetos lista. El "
        "método append agrega un elemento al final de la lista. El método extend extiende la lista agregándole "
        "todos los elementos del iterable. El método insert inserta un elemento en una posición dada. El primer "
        "argumento es el índice del elemento delante del cual se insertará, por lo tanto a.insert(0, x) inserta "
        "al principio de la lista y a.insert(len(a), x) equivale a a.append(x). El método remove quita el primer "
        "elemento de la lista cuyo valor sea x. Lanza un ValueError si no existe tal elemento. El método pop quita "
        "el elemento en la posición dada de la lista y lo retorna. Si no se especifica un índice, a.pop() quita y "
        "retorna el último elemento de la lista.",
        "Otro tipo de dato útil incluido en Python es el diccionario. Los diccionarios se encuentran a veces en "
        "otros lenguajes como memorias asociativas o arreglos asociativos. A diferencia de las secuencias, que se "
        "indexan mediante un rango numérico, los diccionarios se indexan con claves, que pueden ser cualquier tipo "
        "inmutable; las cadenas y los números siempre pueden ser claves. Es mejor pensar en un diccionario como un "
        "conjunto de pares clave: valor con el requerimiento de que las claves sean únicas dentro de un "
        "diccionario. Un par de llaves crea un diccionario vacío. Colocar una lista de pares clave: valor separada "
        "por comas dentro de las llaves agrega pares iniciales al diccionario; esta también es la forma en que los "
        "diccionarios se muestran en la salida. Las operaciones principales sobre un diccionario son guardar un "
        "valor con una clave y extraer ese valor dada la clave.",
    ],
    "ru": [
        "У типа данных список есть ещё несколько методов. Ниже перечислены все методы объектов списка. Метод "
        "append добавляет элемент в конец списка. Метод extend расширяет список, добавляя в него все элементы из "
        "итерируемого объекта. Метод insert вставляет элемент в заданную позицию. Первый аргумент — это индекс "
        "элемента, перед которым нужно вставить новый, поэтому a.insert(0, x) вставляет элемент в начало списка, "
        "а a.insert(len(a), x) равносильно a.append(x). Метод remove удаляет из списка первый элемент, значение "
        "которого равно x. Если такого элемента нет, возникает исключение ValueError. Метод pop удаляет элемент в "
        "заданной позиции списка и возвращает его. Если индекс не указан, a.pop() удаляет и возвращает последний "
        "элемент списка.",
        "Ещё один полезный встроенный в Python тип данных — это словарь. В других языках словари иногда называют "
        "ассоциативной памятью или ассоциативными массивами. В отличие от последовательностей, которые "
        "индексируются диапазоном чисел, словари индексируются ключами, которые могут быть любого неизменяемого "
        "типа; строки и числа всегда могут быть ключами. Лучше всего представлять словарь как множество пар "
        "ключ: значение с условием, что ключи в пределах одного словаря уникальны. Пара фигурных скобок создаёт "
        "пустой словарь. Список пар ключ: значение через запятую внутри скобок добавляет в словарь начальные "
        "пары; именно так словари и выводятся на экран. Основные операции со словарём — это сохранение значения "
        "по ключу и извлечение значения по заданному ключу.",
    ],
    "zh": [
        "列表数据类型还有一些其他方法。下面列出了列表对象的所有方法。方法 append 在列表末尾添加一个元素。方法 extend "
        "用可迭代对象中的所有元素来扩展列表。方法 insert 在指定位置插入一个元素。第一个参数是要插入的元素的索引，所以 "
        "a.insert(0, x) 在列表开头插入元素，而 a.insert(len(a), x) 等同于 a.append(x)。方法 remove "
        "从列表中删除第一个值为 x 的元素。如果没有这样的元素，则抛出 ValueError 异常。方法 pop "
        "删除列表中指定位置的元素，并返回被删除的元素。如果未指定索引，a.pop() 将删除并返回列表的最后一个元素。",
        "Python 中另一个非常有用的内置数据类型是字典。字典在其他语言中有时被称为联合内存或联合数组。"
        "与以连续整数为索引的序列不同，字典是以关键字为索引的，关键字可以是任意不可变类型，通常是字符串或数字。"
        "可以把字典理解为键值对的集合，但字典的键必须是唯一的。花括号可以创建一个空字典。"
        "另一种初始化字典的方式是，在花括号里输入逗号分隔的键值对，这也是字典的输出方式。"
        "字典的主要用途是通过关键字存储、提取值。",
    ],
    "ja": [
        "リストのデータ型には、さらにいくつかのメソッドがあります。以下はリストオブジェクトのすべてのメソッドです。"
        "メソッド append はリストの末尾に要素を一つ追加します。メソッド extend はイテラブルのすべての要素を対象の"
        "リストに追加し、リストを拡張します。メソッド insert は指定した位置に要素を挿入します。第一引数は要素を挿入"
        "する位置のインデックスで、a.insert(0, x) はリストの先頭に挿入し、a.insert(len(a), x) は a.append(x) "
        "と等価です。メソッド remove はリスト中で値が x と等しい最初の要素を削除します。該当する要素がなければ "
        "ValueError が送出されます。メソッド pop はリスト中の指定された位置にある要素をリストから削除して、その要素"
        "を返します。インデックスが指定されなければ、a.pop() はリストの末尾の要素を削除して返します。",
        "もう一つの Python に組み込まれている便利なデータ型は辞書です。辞書は他の言語にも連想記憶や連想配列として"
        "存在することがあります。ある範囲の数でインデックス化されているシーケンスと異なり、辞書はキーでインデックス化"
        "されています。このキーは何らかの変更不能な型になります。文字列、数値は常にキーにすることができます。辞書は、"
        "キーと値のペアの集合であり、キーが辞書の中で一意でなければならないと考えるとよいでしょう。波括弧の対を書くと"
        "空の辞書になります。波括弧の中にカンマで区切られたキーと値のペアを入れると、辞書の初期値となるペアが追加"
        "されます。これは辞書が出力されるときと同じ書き方です。辞書での主な操作は、ある値を何らかのキーを付けて記憶"
        "することと、キーを指定して値を取り出すことです。",
    ],
}
